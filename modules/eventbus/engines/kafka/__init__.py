"""The Kafka engine: kafka-python's producer and consumer, each on a thread of its own,
bridged to the event loop, on the broker kit (:mod:`..broker`).

Names on the wire (fixed, so that other programs can produce and consume them): an
untenanted event goes to the Kafka topic ``<topicPrefix><topic>`` (``topicPrefix`` is ``""``
by default: the Kafka topic is the event topic, as Go Modular names it), a tenanted one to
``<topicPrefix>__<tenant>.<topic>``; each record's value is the CloudEvents envelope
(:mod:`...codec`) and its key the event's ``partition_key``. The topic is authoritative: an
envelope whose ``type`` or ``tenant`` contradicts it is a decode error (counted, logged,
skipped), like a record that is not an envelope at all. A topic Kafka cannot name (over 249
characters, ``.`` or ``..``) is a ``ValueError`` at publish and subscribe.

Publishing: a publish returns once the broker acknowledged it (``acks``, default ``all``);
publishes are sent in batches (``batchSize``, ``lingerMs``). While no broker answers, a
publish fails with ``EngineUnavailableError`` after ``publishTimeout``. A publish retried
after a link failure may be stored twice (the producer is not idempotent: see
:mod:`.clients`). The engine creates the topics it publishes to and subscribes to (with
``partitions`` and ``replicationFactor``) unless they exist. Events of one topic keep their
order within a partition: with ``partitions`` above 1, give events that must stay in order
the same ``partition_key``.

Receiving: one consumer per engine, reading the union of the subscriptions, handing each
record to the local fan-out (delivery modes, stats, tenants). ``groupId`` decides the
semantics (see :mod:`.reader`):

- none (default): every process reads every partition itself: every process gets every
  event (broadcast). ``subscribe()`` is live at once.
- a ``groupId``: the processes of the group share the partitions, each event goes to one of
  them. Offsets are committed once every local delivery of an event settled (handled,
  failed, or dropped by policy), over the contiguous settled run per partition; a process
  that dies before the commit leaves its events to the group's next member
  (at-least-once: duplicates are possible after a rebalance). At-least-once needs ``block``
  delivery, the default here: an explicit ``drop`` or ``timeout`` may drop events (counted)
  and commit past them. ``subscribe()`` returns before the group join completes (events
  published after it returned are delivered all the same); the first events arrive once
  the join completes: about half of ``sessionTimeout`` on the brokers seen here, and a few
  rounds of it when subscriptions change (each change of the union re-joins the group).

Unsubscribing stops delivery at once, and the consumer stops reading what no subscription
wants. Broker down: ``start()`` waits ``connectTimeout`` (``requireAtStart`` makes it fail),
then the engine is ``down`` and reconnects with the kit's backoff; ``stop()`` is bounded by
``shutdownTimeout`` with the broker gone.

The modules here import the ``kafka`` client library (kafka-python) by its absolute name.
"""

from .config import KafkaEngineConfig, KafkaSecurity
from .engine import KafkaEngine

__all__ = ["KafkaEngine", "KafkaEngineConfig", "KafkaSecurity"]
