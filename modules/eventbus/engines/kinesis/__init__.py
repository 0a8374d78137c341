"""The Kinesis engine: every topic on one stream, read by one reader per shard.

Names on the wire: the stream is ``streamName`` (default ``eventbus``); each record is the
CloudEvents envelope of one event (:mod:`...codec`, ``type`` = topic), and its partition key
is the event's ``partition_key`` or else its topic, so the events of one topic keep their
order (one key, one shard). The shard says nothing about topic or tenant: the envelope is
all there is, so tenant isolation is the local filter; isolation on the wire takes a tenant
overlay with an engine of its own ``streamName``.

Publishing: concurrent publishes are sent together in PutRecords requests (at most
``batchSize`` records and 5 MiB); records Kinesis answers as failed (throttled) are sent
again with backoff until their ``publishTimeout``, then their publisher gets
``EngineUnavailableError``. A record over ``maxMessageSize`` (1 MiB at most, partition key
included) is refused at publish with ``EventEncodeError``.

Reading (:mod:`.shards`): from the first subscribe until stop, one reader task per shard
(each with its own boto3 thread), positioned before that subscribe returns; shards are
listed again every ``shardDiscoveryInterval`` and whenever one was read to its end, and a
child of a split or merge is read after its parents. Without a checkpoint store every
process reads every shard from ``iteratorType``; with one (:mod:`.checkpoints`), a reader
resumes after the last record the application ``appName`` handled, and with ``redis`` the
processes of one appName share the shards through leases.

The parts: :mod:`.config`, :mod:`.client` (boto3, errors, the calls), :mod:`.publishing`,
:mod:`.shards`, :mod:`.checkpoints`, :mod:`.engine`.
"""

from .config import KinesisEngineConfig
from .engine import KinesisEngine

__all__ = ["KinesisEngine", "KinesisEngineConfig"]
