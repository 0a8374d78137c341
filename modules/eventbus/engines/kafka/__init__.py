"""The Kafka engine (kafka-python on its own threads, on the broker kit)."""

from .config import KafkaEngineConfig, KafkaSecurity

__all__ = ["KafkaEngineConfig", "KafkaSecurity"]
