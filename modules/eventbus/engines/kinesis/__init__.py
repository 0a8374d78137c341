"""The Kinesis engine (see :mod:`.engine`)."""

from .config import KinesisEngineConfig

__all__ = ["KinesisEngineConfig"]
