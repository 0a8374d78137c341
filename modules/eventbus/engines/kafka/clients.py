"""Making kafka-python clients, and what their errors mean to the engine.

Every client is created on the thread that uses it (``KafkaProducer`` and ``KafkaConsumer``
contact the brokers in their constructors), with the settings of
:meth:`KafkaEngineConfig.client_settings`.
"""

from __future__ import annotations

from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.errors import KafkaError, RetriableError, TopicAlreadyExistsError

from .config import KafkaEngineConfig

# Failures of the link to the brokers: the kit reconnects (and retries publishes).
LINK_ERRORS: tuple[type[BaseException], ...] = (KafkaError, OSError)
TOPIC_EXISTS = TopicAlreadyExistsError.errno


def is_link_error(error: BaseException) -> bool:
    """Whether ``error`` says the brokers could not be reached (as opposed to a refusal of
    one message, such as one too large)."""
    return isinstance(error, RetriableError | OSError)


def _timeouts(settings: KafkaEngineConfig) -> dict[str, Any]:
    wait_ms = int(min(settings.connect_timeout, settings.publish_timeout) * 1000)
    return {"bootstrap_timeout_ms": max(wait_ms, 1000)}


def new_producer(settings: KafkaEngineConfig, engine: str) -> KafkaProducer:
    publish_ms = int(settings.publish_timeout * 1000)
    base = settings.client_settings(engine)
    return KafkaProducer(
        **base,
        **_timeouts(settings),
        acks=settings.acks,
        linger_ms=settings.linger_ms,
        compression_type=None if settings.compression == "none" else settings.compression,
        max_request_size=max(settings.max_message_size + 1024, 1024 * 1024),
        # An idempotent producer of kafka-python 3.0 dies for good when the broker forgets
        # its producer id (Tansu after a restart); the bus retries itself instead.
        enable_idempotence=False,
        # send() waits for metadata at most this long, and a batch is given up after it:
        # a publish fails within publishTimeout, and is not sent later behind its back.
        max_block_ms=publish_ms,
        delivery_timeout_ms=max(publish_ms, base["request_timeout_ms"] + settings.linger_ms),
        # The engine creates its topics (partitions, replicationFactor); the producer's own
        # metadata requests must not, with the broker's defaults, behind its back.
        allow_auto_create_topics=False,
    )


def new_admin(settings: KafkaEngineConfig, engine: str) -> KafkaAdminClient:
    return KafkaAdminClient(**settings.client_settings(engine), **_timeouts(settings))


def new_consumer(settings: KafkaEngineConfig, engine: str, group: str | None) -> KafkaConsumer:
    return KafkaConsumer(
        **settings.client_settings(engine),
        **_timeouts(settings),
        group_id=group,
        enable_auto_commit=False,
        # Where a partition without a committed offset starts is decided by the engine
        # (see the reader); what kafka-python resets to is only ever the oldest event the
        # broker holds: a partition emptied by a broker restart, a topic created later.
        auto_offset_reset="earliest",
        session_timeout_ms=int(settings.session_timeout * 1000),
        heartbeat_interval_ms=int(settings.heartbeat_interval * 1000),
        max_poll_records=min(settings.max_in_flight, 500),
        allow_auto_create_topics=False,
    )


def create_topics(admin: KafkaAdminClient, names: list[str], settings: KafkaEngineConfig) -> None:
    """Create the topics ``names`` (with ``partitions`` and ``replicationFactor``); one that
    exists already is fine."""
    request = {
        name: {
            "num_partitions": settings.partitions,
            "replication_factor": settings.replication_factor,
        }
        for name in names
    }
    response = admin.create_topics(request, raise_errors=False)
    for topic in response.get("topics", ()):
        code = topic.get("error_code", 0)
        if code not in (0, TOPIC_EXISTS):
            message = topic.get("error_message") or f"error code {code}"
            raise KafkaError(f"could not create topic {topic.get('name')!r}: {message}")
