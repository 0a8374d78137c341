"""The Redis engine: pub/sub (at-most-once) or streams with consumer groups (at-least-once).

Names on the wire (fixed, so that other programs can produce and consume them): an untenanted
event goes to ``<channelPrefix><topic>``, a tenanted one to ``<channelPrefix><tenant>:<topic>``;
in streams mode these are the stream keys, and each entry has one field, ``event``, holding
the CloudEvents envelope (:mod:`...codec`). The channel or key is authoritative: an envelope
whose ``type`` or ``tenant`` contradicts where it was found is counted as a decode error, so
that no producer can put one tenant's event in front of another tenant.

Connections, per engine and process: one receiving connection (the pub/sub connection, or
the stream reader), one publishing connection that sends every publish in pipelined batches,
and a small pool (``poolSize``) for everything else (consumer groups, acknowledgements,
discovery). The engine is built on the broker kit (:mod:`..broker`): health, reconnection
with its one backoff, decode-and-check, acknowledgement bookkeeping, batched publishing with
``publishTimeout`` and ``maxMessageSize``, and bounded stop come from there; the receiving
side resubscribes everything it had at each new session.

pub/sub: a local subscription maps to SUBSCRIBE (exact topic) or PSUBSCRIBE (pattern, with
the glob characters of its literal part escaped); Redis-side subscriptions are reference
counted and ``subscribe`` returns once Redis confirmed them. A message that reaches the
connection through several Redis subscriptions (``user.created`` and ``user.*``) is handed
to the local fan-out once.

streams: one consumer group per engine: ``groupName`` (shared by every process configured
with it, and durable), or by default one per process, ``<engine>-<host>-<pid>``, destroyed
on a clean stop (so only a named group declares durability). An entry is acknowledged once
every local delivery of it settled; entries still queued at shutdown are not, and come back
(pending entries idle for ``claimIdle`` are claimed by a live consumer of the group). A
group that vanished (a server restarted without persistence) is made again from the start
of the stream. Streams mode reads durably, so its ``deliveryMode`` defaults to ``block``.
Pattern subscriptions find their stream keys with SCAN, when they subscribe and every
``scanInterval``.

The parts, each read top to bottom:

- :mod:`.config`: the engine's config map;
- :mod:`.connection`: opening connections and the control client;
- :mod:`.channels`: names on the wire, from an event to its channel and back;
- :mod:`.engine`: :class:`RedisEngine`, what the kit asks of an engine (sessions, pipelined
  publishing, acknowledgements);
- :mod:`.receiving`: the interface through which the engine drives a mode;
- :mod:`.pubsub` and :mod:`.streams`: the two modes.

The modules here import the ``redis`` client library by its absolute name, which never
resolves to this package.
"""

from .channels import glob_escape
from .config import RedisEngineConfig, masked_url
from .engine import RedisEngine

__all__ = ["RedisEngine", "RedisEngineConfig", "glob_escape", "masked_url"]
