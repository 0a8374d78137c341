"""THE kit every broker engine is built from (Redis, Kafka, Kinesis, and any later one), so
that a reliability rule is written once and holds on every broker. See README.md here.

- :class:`BrokerEngine` (``engine``): lifecycle, ``connectTimeout`` / ``requireAtStart``,
  health, the receiving session loop, subscribe/unsubscribe, publish, bounded stop;
- :class:`BrokerEngineConfig` (``config``): the settings every broker engine takes, the
  durable default delivery mode, masking of secrets (``mask_url``, :class:`Masker`);
- :class:`ConnectionHealth`, :class:`Backoff` (``health``): supervision and THE backoff;
- :class:`Inbound`, :class:`Origin` (``inbound``): decode-and-check, decode errors, hand-on
  in the event's tenant context;
- :class:`MessageAcks`, :class:`WatermarkAcks` (``acks``): acknowledgement bookkeeping;
- :class:`Outbox`, :class:`Outgoing` (``outbox``): batched publishing with deadlines;
- :class:`ThreadBridge`, :class:`HandOff` (``bridge``): blocking clients on their own thread;
- :func:`cancel`, :func:`bounded` (``tasks``): ending tasks within a deadline, for sure.

Nothing here imports a broker client library.
"""

from ...delivery import Outcome
from ..base import EngineHealth, HealthState
from .acks import DECODE_ERROR, AckTracker, MessageAcks, Settle, WatermarkAcks
from .bridge import HandOff, ThreadBridge
from .config import (
    MIB,
    BrokerEngineConfig,
    Masker,
    PositiveDuration,
    mask_url,
    secret_text,
    url_secrets,
)
from .engine import BrokerEngine, Session
from .health import Backoff, ConnectionHealth
from .inbound import Inbound, Origin
from .outbox import Outbox, Outgoing
from .tasks import bounded, cancel

__all__ = [
    "DECODE_ERROR",
    "MIB",
    "AckTracker",
    "Backoff",
    "BrokerEngine",
    "BrokerEngineConfig",
    "ConnectionHealth",
    "EngineHealth",
    "HandOff",
    "HealthState",
    "Inbound",
    "Masker",
    "MessageAcks",
    "Origin",
    "Outbox",
    "Outcome",
    "Outgoing",
    "PositiveDuration",
    "Session",
    "Settle",
    "ThreadBridge",
    "WatermarkAcks",
    "bounded",
    "cancel",
    "mask_url",
    "secret_text",
    "url_secrets",
]
