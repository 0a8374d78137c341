"""What docs/configuration.md says about each key, beside scripts/config_reference.py.

A key of a config model without a ``Field(description=...)`` takes its line from here, by
model class name and field name; the generator fails on a key found in neither, and on an
entry here for a key that the models rendered no longer have.
"""

# camelCase spellings that are not the plain conversion of the field name (any spelling
# matches: keys compare without case and underscores).
CAMEL = {
    "event_ttl": "eventTTL",
    "external_broker_url": "externalBrokerURL",
    "ssl_ca_certs": "sslCaCerts",
}

# What each engine type is, under its heading.
TYPE_SUMMARIES = {
    "memory": "In this process: bounded queues, ordered per subscription, at-most-once "
    "(`deliveryMode`). The settings of every engine, no keys of its own.",
    "durable-memory": "In this process, never drops while it runs: publishers wait for room.",
    "custom": "An example engine written against the public engine API: in-process, with "
    "metrics and topic filters.",
    "redis": "Redis pub/sub (at-most-once) or streams (at-least-once, consumer groups). "
    "Extra `redis`. The legacy `externalBroker*` keys fill `url`, `username`, `password`.",
    "kafka": "Kafka topics, consumer groups, offsets committed after handling. Extra `kafka`.",
    "kinesis": "One Kinesis stream, read shard by shard, with checkpoints. Extra `kinesis`.",
}

# Descriptions by model class name, then field name. Keep each to one line of the table.
DESCRIPTIONS: dict[str, dict[str, str]] = {
    "EventBusConfig": {
        "engine": "legacy single-engine form: the type of the one engine, named `default`, "
        "used when `engines` is absent",
        "engines": "the engines to run: a list of `{name, type, config}`",
        "routing": "rules in order, first match wins; a topic no rule matches goes to the "
        "first engine",
        "shutdown_timeout": "how long `stop()` drains queues before counting the rest as dropped",
        "source": "the CloudEvents `source` of published events",
        "metrics": "exporters started and stopped with the bus; each runs when its table "
        "is present",
    },
    "EngineSpec": {
        "name": "the engine's name, unique; routes and stats use it",
        "type": "an engine type: a built-in below, or one added with `register_engine`",
        "config": "the engine's own keys; settings of every engine set here override the "
        "top of the section",
    },
    "RoutingRule": {
        "topics": "topics or patterns (`user.*`, `*`); a single string is one pattern",
        "engine": "the name of the engine these topics go to",
    },
    "MetricsConfig": {
        "prometheus": "serve `/metrics` with prometheus-client's HTTP server (extra `prometheus`)",
        "datadog": "send gauges to a DogStatsD agent (extra `datadog`)",
    },
    "PrometheusServerConfig": {
        "port": "the port of `/metrics`; 0 picks a free one",
        "host": "the address to listen on; `0.0.0.0` to be scraped from other hosts",
        "namespace": "prefix of every metric name",
        "include_process": "also the process_*, python_* and gc_* metrics",
    },
    "DatadogExporterConfig": {
        "address": "the DogStatsD agent, `host:port` (UDP)",
        "namespace": "prefix of every metric name; the trailing dot is optional",
        "flush_interval": "how often the gauges are sent",
        "max_packet_size": "bytes per UDP packet; 1432 fits an Ethernet MTU",
        "include_per_engine": "gauges per engine, besides `engine:_all`",
        "include_runtime": "also `runtime.asyncio_tasks` and `runtime.threads`",
        "tags": "tags added to every metric, e.g. `env:prod`",
    },
    "EngineConfig": {
        "max_event_queue_size": "queue of the worker pool of async subscriptions; events "
        "kept in history per topic",
        "default_event_buffer_size": "queue of each ordered subscription",
        "worker_count": "workers running the async (`subscribe_async`) subscriptions",
        "event_ttl": "how long history keeps an event (capped by `retentionDays`)",
        "retention_days": "the longest history keeps an event, in days",
        "delivery_mode": "when a queue is full: `drop` the event, `block` the publisher, or "
        "wait `publishBlockTimeout` then drop; durable broker modes default to `block`",
        "publish_block_timeout": "how long `timeout` mode waits; must be > 0 in that mode",
        "rotate_subscriber_order": "start each fan-out at the next subscriber, for fairness",
        "external_broker_url": "legacy broker address, used by a broker engine without its "
        "own address key",
        "external_broker_user": "legacy broker user name, likewise",
        "external_broker_password": "legacy broker password, likewise",
    },
    "BrokerEngineConfig": {
        "connect_timeout": "how long `start()` waits for the broker before the engine "
        "starts `down` and keeps reconnecting",
        "require_at_start": "fail `start()` (and `app.start()`) when the broker cannot be reached",
        "publish_timeout": "how long a publish or subscribe waits while the broker is "
        "unreachable, then `EngineUnavailableError`",
        "max_message_size": "largest encoded envelope a publish may send (1 MiB), else "
        "`EventEncodeError`",
        "batch_size": "concurrent publishes sent to the broker in one batch",
        "reconnect_min_delay": "first delay of the reconnection backoff",
        "reconnect_max_delay": "longest delay of the reconnection backoff",
    },
    "DurableMemoryConfig": {
        "delivery_mode": "always `block`: a durable-memory engine never drops while it runs",
        "max_durable_queue_depth": "mailbox size of each subscription; 0: `maxEventQueueSize`",
    },
    "CustomEngineConfig": {
        "enable_metrics": "keep metrics and log them every `metricsInterval`",
        "metrics_interval": "how often the metrics are logged",
        "event_filters": "accept only topics starting with one of these prefixes; none: all",
    },
    "EventFilter": {"topic_prefix": "a topic prefix the engine accepts"},
    "RedisEngineConfig": {
        "url": "`redis://`, `rediss://` (TLS) or `unix://`; `host:port` is read as redis://",
        "db": "the database number; none: the one of the url",
        "username": "ACL user; none: the url's or `externalBrokerUser`",
        "password": "password; none: the url's or `externalBrokerPassword`",
        "pool_size": "connections of the publishing pool",
        "channel_prefix": "channels and stream keys are `<prefix><topic>` or "
        '`<prefix><tenant>:<topic>`; `""`: bare topics',
        "mode": "`pubsub`: at-most-once; `streams`: at-least-once with a consumer group",
        "group_name": "streams: a shared, durable consumer group; empty: one per process, "
        "removed on a clean stop",
        "max_len": "streams: approximate length each stream is trimmed to; 0: never trimmed",
        "claim_idle": "streams: pending entries idle this long are claimed from a consumer "
        "that went away",
        "read_count": "streams: entries asked for by one read",
        "scan_interval": "streams: how often pattern subscriptions look for new streams",
        "health_check_interval": "a connection quiet this long is checked with a PING",
        "ssl_ca_certs": "CA bundle for a `rediss://` url",
        "ssl_certfile": "client certificate for a `rediss://` url",
        "ssl_keyfile": "client key for a `rediss://` url",
    },
    "KafkaEngineConfig": {
        "brokers": 'bootstrap servers, a list or `"h1:p,h2:p"`',
        "group_id": "the consumer group: processes of one group share the events; none: a "
        "group per process, which gets every event",
        "client_id": "the client id; none: `eventbus-<engine>`",
        "topic_prefix": 'Kafka topics are `<prefix><topic>`; `""`: the event topic itself',
        "partitions": "partitions of the topics the engine creates",
        "replication_factor": "replication factor of the topics the engine creates",
        "acks": "producer acknowledgements: every in-sync replica, the leader only, or none",
        "linger_ms": "how long the producer waits to fill a batch, in ms",
        "compression": "producer compression (snappy, lz4, zstd need their Python package)",
        "session_timeout": "consumer group session timeout",
        "heartbeat_interval": "consumer group heartbeat interval",
        "auto_offset_reset": "a group without committed offsets starts now, or at the oldest event",
        "metadata_max_age": "how soon a pattern subscription sees a topic created elsewhere",
        "max_in_flight": "received events not yet settled, beyond which the consumer waits",
        "security": "how the clients authenticate and encrypt",
    },
    "KafkaSecurity": {
        "protocol": "the security protocol of the broker connections",
        "sasl_mechanism": "with a SASL protocol: the mechanism; none: `PLAIN`",
        "sasl_username": "SASL user name",
        "sasl_password": "SASL password",
        "ssl_cafile": "CA bundle for SSL",
        "ssl_certfile": "client certificate for SSL",
        "ssl_keyfile": "client key for SSL",
        "ssl_check_hostname": "check the broker's certificate against its host name",
    },
    "KinesisEngineConfig": {
        "region": "the AWS region",
        "stream_name": "the one stream every event of the engine goes to",
        "shard_count": "shards of the stream when the engine creates it",
        "endpoint_url": "another endpoint than AWS's (a local Kinesis API server)",
        "access_key_id": "AWS access key id; none: boto3's default credential chain",
        "secret_access_key": "AWS secret access key",
        "session_token": "AWS session token",
        "create_stream": "create the stream when it does not exist",
        "stream_active_timeout": "how long start waits for the stream to become ACTIVE",
        "request_timeout": "timeout of one request to Kinesis",
        "poll_interval": "pause of a shard reader after an empty read",
        "iterator_type": "a shard without a checkpoint is read from its newest or oldest record",
        "max_records_per_get": "records asked for by one GetRecords",
        "shard_discovery_interval": "how often new shards (after a reshard) are looked for",
        "app_name": "the application whose checkpoints and leases these are",
        "checkpoint_store": "`memory` or `redis`: resume after the last handled record; "
        "none: no checkpoints",
        "checkpoint_redis_url": "the Redis of `checkpointStore = redis`",
        "checkpoint_key_prefix": "prefix of the checkpoint and lease keys in Redis",
        "checkpoint_interval": "how often checkpoints are written",
        "lease_duration": "with Redis checkpoints: how long a process holds a shard's lease",
    },
}
