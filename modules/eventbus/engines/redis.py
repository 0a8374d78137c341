"""The Redis engine: pub/sub (at-most-once) or streams with consumer groups (at-least-once).

Names on the wire (fixed, so that other programs can produce and consume them): an untenanted
event goes to ``<channelPrefix><topic>``, a tenanted one to ``<channelPrefix><tenant>:<topic>``;
in streams mode these are the stream keys, and each entry has one field, ``event``, holding
the CloudEvents envelope (:mod:`..codec`). The channel or key is authoritative: an envelope
whose ``type`` or ``tenant`` contradicts where it was found is counted as a decode error, so
that no producer can put one tenant's event in front of another tenant.

Connections, per engine and process: one receiving connection (the pub/sub connection, or
the stream reader), one publishing connection that sends every publish in pipelined batches,
and a small pool (``poolSize``) for everything else (consumer groups, acknowledgements,
discovery). Each connection reconnects with exponential backoff; the receiving side
resubscribes everything it had.

pub/sub: a local subscription maps to SUBSCRIBE (exact topic) or PSUBSCRIBE (pattern, with
the glob characters of its literal part escaped); Redis-side subscriptions are reference
counted and ``subscribe`` returns once Redis confirmed them. A message that reaches the
connection through several Redis subscriptions (``user.created`` and ``user.*``) is handed
to the local fan-out once.

streams: one consumer group per engine: ``groupName`` (shared by every process configured
with it, and durable), or by default one per process, ``<engine>-<host>-<pid>``, destroyed
on a clean stop. An entry is acknowledged once every local delivery of it settled; entries
still queued at shutdown are not, and come back (pending entries idle for ``claimIdle`` are
claimed by a live consumer of the group). Pattern subscriptions find their stream keys with
SCAN, when they subscribe and every ``scanInterval``.

Everything lives in this one file so that the engine reads as one piece; the pub/sub and
streams parts are in separate sections below.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
import os
import re
import socket
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping
from typing import Annotated, Any, ClassVar, Literal, NamedTuple, Protocol, cast
from urllib.parse import urlsplit, urlunsplit

import redis.asyncio as aioredis
from pydantic import BeforeValidator, Field, SecretStr, field_validator, model_validator
from redis.asyncio.connection import Connection, SSLConnection, parse_url
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff, NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from modular import FieldError
from modular.tenants import current_tenant_var

from ..codec import decode, encode
from ..config import EngineConfig, PositiveInt, parse_duration
from ..errors import EngineUnavailableError, EventDecodeError
from ..event import Event, Subscription
from ..topics import matches, validate_tenant, validate_topic
from .base import Capabilities, FanoutEngine

logger = logging.getLogger("modules.eventbus.engines.redis")

DEFAULT_URL = "redis://127.0.0.1:6379"
PositiveDuration = Annotated[float, BeforeValidator(parse_duration), Field(gt=0)]

# A failure of the link to Redis, as opposed to Redis refusing one command (ResponseError);
# the builtin TimeoutError (of asyncio.timeout) is an OSError.
_LINK_ERRORS = (RedisConnectionError, RedisTimeoutError, OSError)
_ROUTE_CACHE_LIMIT = 10_000
_DECODE_LOG_INTERVAL = 10.0  # seconds: one warning per burst of undecodable messages
_STREAM_BLOCK = 1.0  # seconds an XREADGROUP waits for entries before it is sent again
_CLIENT_NAME_UNSAFE = re.compile(r"[^A-Za-z0-9._:/-]")  # CLIENT SETNAME takes no spaces

# Default group names handed out in this process: a second engine of the same name (two
# applications in one process, as in tests) must not share, and then destroy, the first's.
_default_groups: Counter[str] = Counter()


def _secret_text(value: object) -> str:
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    return str(value) if value else ""


def masked_url(url: str) -> str:
    """``url`` without its password, for messages and reprs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if ":" in host:  # an IPv6 address
        host = f"[{host}]"
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


class RedisEngineConfig(EngineConfig):
    """The ``config`` map of a ``type: redis`` engine (camelCase or snake_case keys).

    ``publishTimeout`` bounds every wait on Redis: a publish, a subscription's confirmation,
    the first connection at start. The legacy ``externalBrokerURL``/``User``/``Password``
    are used when ``url``/``username``/``password`` are not given.
    """

    url: str = DEFAULT_URL
    db: Annotated[int, Field(ge=0)] | None = None
    username: str | None = None
    password: SecretStr | None = None
    pool_size: PositiveInt = 10
    channel_prefix: str = "eventbus:"
    mode: Literal["pubsub", "streams"] = "pubsub"
    group_name: str = ""
    max_len: Annotated[int, Field(ge=0)] = 100_000  # approximate trimming; 0 = never trim
    claim_idle: PositiveDuration = 60.0
    publish_timeout: PositiveDuration = 5.0
    batch_size: PositiveInt = 500  # publishes sent in one pipeline
    read_count: PositiveInt = 500  # stream entries asked for by one read
    scan_interval: PositiveDuration = 1.0
    health_check_interval: PositiveDuration = 15.0
    reconnect_min_delay: PositiveDuration = 0.05
    reconnect_max_delay: PositiveDuration = 2.0
    ssl_ca_certs: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _legacy_broker_settings(cls, data: Any) -> Any:
        if not isinstance(data, Mapping):
            return data
        data = dict(data)
        legacy = {
            "url": data.get("external_broker_url"),
            "username": data.get("external_broker_user"),
            "password": data.get("external_broker_password"),
        }
        for field, value in legacy.items():
            if not _secret_text(data.get(field)) and _secret_text(value):
                data[field] = value
        return data

    @field_validator("url")
    @classmethod
    def _known_scheme(cls, url: str) -> str:
        url = url.strip()
        if "://" not in url:  # "host:port", as legacy externalBrokerURL values often are
            url = f"redis://{url}"
        # FieldError: the message is shown as written, never followed by the (secret) value.
        if urlsplit(url).scheme not in ("redis", "rediss", "unix"):
            raise FieldError(
                (), f"url must start with redis://, rediss:// or unix://, got {masked_url(url)!r}"
            )
        try:
            parse_url(url)
        except ValueError as exc:
            raise FieldError((), f"invalid url {masked_url(url)!r}: {exc}") from None
        return url

    @model_validator(mode="after")
    def _consistent(self) -> RedisEngineConfig:
        tls = (self.ssl_ca_certs, self.ssl_certfile, self.ssl_keyfile)
        if any(tls) and urlsplit(self.url).scheme != "rediss":
            raise FieldError(("url",), "sslCaCerts/sslCertfile/sslKeyfile need a rediss:// url")
        if self.reconnect_max_delay < self.reconnect_min_delay:
            raise FieldError(("reconnect_max_delay",), "must not be below reconnectMinDelay")
        return self

    def __repr_args__(self) -> Iterable[tuple[str | None, Any]]:
        for name, value in super().__repr_args__():
            if name in ("url", "external_broker_url") and isinstance(value, str):
                value = masked_url(value)
            yield name, value


class _Link(Protocol):
    """The part of redis-py's asyncio Connection used for the engine's own connections."""

    @property
    def is_connected(self) -> bool: ...
    async def connect(self) -> None: ...
    async def disconnect(self, nowait: bool = ...) -> None: ...
    async def send_command(self, *args: Any, **kwargs: Any) -> None: ...
    async def send_packed_command(self, command: list[bytes], check_health: bool = ...) -> None: ...
    def pack_commands(self, commands: Iterable[Iterable[Any]]) -> list[bytes]: ...
    async def read_response(
        self, disable_decoding: bool = ..., timeout: float | None = ...
    ) -> Any: ...


class _Route(NamedTuple):
    """Where a channel or stream key leads: its tenant and topic, or why it leads nowhere."""

    tenant: str | None
    topic: str
    error: str | None = None


class _Pending:
    """One publish waiting for Redis."""

    __slots__ = ("command", "deadline", "future", "topic")

    def __init__(
        self, command: tuple[Any, ...], future: asyncio.Future[None], deadline: float, topic: str
    ) -> None:
        self.command = command
        self.future = future
        self.deadline = deadline
        self.topic = topic


class _Wire:
    """One Redis-side pub/sub subscription (a channel, or a glob pattern), shared by every
    local subscription that needs it."""

    __slots__ = ("confirmed", "is_pattern", "link", "raw", "refs", "ticket")

    def __init__(self, is_pattern: bool, raw: bytes, confirmed: asyncio.Future[None]) -> None:
        self.is_pattern = is_pattern
        self.raw = raw
        self.confirmed = confirmed
        self.refs = 0
        self.link: _PubSubLink | None = None
        self.ticket = 0  # the n-th (UN)SUBSCRIBE of this name on ``link``: its confirmation


class _PubSubLink:
    """The pub/sub connection, and what Redis confirmed on it so far.

    Redis confirms every (P)SUBSCRIBE and (P)UNSUBSCRIBE, per name and in order, so counting
    commands sent and confirmations received per name tells when a given one took effect.
    """

    __slots__ = ("acked", "awaiting", "channels", "conn", "lock", "owners", "patterns", "sent")

    def __init__(self, conn: _Link) -> None:
        self.conn = conn
        # Subscriptions to be confirmed before the session counts as established; None after.
        self.awaiting: set[tuple[bool, bytes]] | None = set()
        self.lock = asyncio.Lock()
        self.sent: dict[tuple[bool, bytes], int] = {}
        self.acked: dict[tuple[bool, bytes], int] = {}
        self.channels: set[bytes] = set()  # confirmed, as Redis has them
        self.patterns: dict[bytes, Callable[[str], bool]] = {}
        self.owners: dict[bytes, bytes | None] = {}  # channel -> the pattern that delivers it


Target = tuple[bool, str, Callable[[str], bool] | None]  # (is pattern, name, matcher)

_GLOB_ESCAPES = str.maketrans({c: "\\" + c for c in "\\*?[]"})


def glob_escape(text: str) -> str:
    """``text`` as a Redis glob that matches only itself."""
    return text.translate(_GLOB_ESCAPES)


class RedisEngine(FanoutEngine):
    capabilities: ClassVar[Capabilities] = Capabilities(
        patterns=True, ordering=True, durability=False, cross_process=True
    )
    config_model: ClassVar[type[EngineConfig]] = RedisEngineConfig

    def __init__(self, name: str, config: EngineConfig) -> None:
        if not isinstance(config, RedisEngineConfig):
            config = RedisEngineConfig.model_validate(config.model_dump())
        super().__init__(name, config)
        self.settings = config
        self.streams = config.mode == "streams"
        # Per instance: only streams survive a restart of this process.
        self.__dict__["capabilities"] = Capabilities(
            patterns=True, ordering=True, durability=self.streams, cross_process=True
        )
        self.prefix = config.channel_prefix
        host = socket.gethostname()
        self.group = config.group_name or self._default_group(f"{name}-{host}-{os.getpid()}")
        self.durable_group = bool(config.group_name)
        self.consumer = f"{host}-{os.getpid()}-{os.urandom(3).hex()}"
        self._timeout = config.publish_timeout
        self._where = masked_url(config.url)
        self._backoff = ExponentialWithJitterBackoff(
            cap=config.reconnect_max_delay, base=config.reconnect_min_delay
        )
        self._routes: dict[bytes, _Route] = {}
        # lifecycle
        self._redis: Any = None  # redis.asyncio.Redis for control commands
        self._receiver: asyncio.Task[None] | None = None
        self._publisher: asyncio.Task[None] | None = None
        self._helpers: list[asyncio.Task[None]] = []
        self._ready: asyncio.Future[None] | None = None
        self._sessions = 0
        self._down = False
        self._down_since = 0.0
        self._receiving = False
        self._decode_logged_at = -math.inf
        self._decode_unlogged = 0
        # publishing
        self._outbox: deque[_Pending] = deque()
        self._outbox_wakeup: asyncio.Future[None] | None = None
        self._closing = False
        self._publish_error: BaseException | None = None  # why the last attempt failed
        self._maxlen: tuple[Any, ...] = ("MAXLEN", "~", config.max_len) if config.max_len else ()
        # pub/sub
        self._link: _PubSubLink | None = None
        self._wires: dict[tuple[bool, bytes], _Wire] = {}
        self._sub_wires: dict[Subscription, list[_Wire]] = {}
        self._matchers: dict[bytes, Callable[[str], bool]] = {}
        # streams
        self._keys: dict[str, bytes] = {}  # the stream keys the reader reads
        self._keys_changed = asyncio.Event()
        self._joining: dict[str, asyncio.Future[None]] = {}
        self._group_keys: set[str] = set()
        self._since: dict[Subscription, tuple[int, list[str]]] = {}  # pattern sub -> (ms, globs)
        self._unwanted: set[str] = set()
        self._inflight: set[tuple[bytes, bytes]] = set()
        self._acks: list[tuple[bytes, bytes]] = []
        self._ack_wakeup = asyncio.Event()
        self._maintain_wakeup = asyncio.Event()
        self._pending_rereads: set[bytes] = set()  # keys whose own pending entries to re-read
        self._reader_id: int | None = None
        self._reader_blocked = False

    @staticmethod
    def _default_group(base: str) -> str:
        _default_groups[base] += 1
        count = _default_groups[base]
        return base if count == 1 else f"{base}-{count}"

    # --- connections ------------------------------------------------------------------

    def connection_settings(self) -> tuple[type[Any], dict[str, Any]]:
        """The redis-py connection class and keyword arguments every connection is made with."""
        s = self.settings
        kwargs: dict[str, Any] = dict(parse_url(s.url))
        connection_class = kwargs.pop("connection_class", Connection)
        if s.db is not None:
            kwargs["db"] = s.db
        if s.username:
            kwargs["username"] = s.username
        if s.password is not None and s.password.get_secret_value():
            kwargs["password"] = s.password.get_secret_value()
        if connection_class is SSLConnection:
            for option in ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile"):
                value = getattr(s, option)
                if value:
                    kwargs[option] = value
        kwargs["socket_connect_timeout"] = s.publish_timeout
        # RESP2: pub/sub messages are plain replies (RESP3 turns them into push messages that
        # a raw read skips), and every reply keeps one shape whatever the server's version.
        kwargs["protocol"] = 2
        return connection_class, kwargs

    def client_name(self, role: str) -> str:
        """The CLIENT SETNAME of a connection, so that CLIENT LIST tells what each one does."""
        return _CLIENT_NAME_UNSAFE.sub("_", f"eventbus-{self.name}-{role}")

    async def _open(self, role: str) -> _Link:
        """A new connection of the engine's own (no redis-py retries: the engine's loops
        decide when to try again)."""
        connection_class, kwargs = self.connection_settings()
        conn = cast(
            _Link,
            connection_class(
                **{**kwargs, "socket_timeout": None, "client_name": self.client_name(role)}
            ),
        )
        try:
            async with asyncio.timeout(self._timeout):
                await conn.connect()
        except BaseException:
            await _close(conn)
            raise
        return conn

    def _mark_down(self, error: BaseException) -> None:
        if not self._down:
            self._down = True
            self._down_since = time.monotonic()
            logger.warning(
                "redis engine %s lost its connection to %s (%s: %s); reconnecting",
                self.name,
                self._where,
                type(error).__name__,
                error,
            )

    def _mark_up(self) -> None:
        if self._down:
            self._down = False
            logger.info(
                "redis engine %s reconnected to %s after %.1fs",
                self.name,
                self._where,
                time.monotonic() - self._down_since,
            )

    def _session_ready(self) -> None:
        """The receiving connection is (re)established and has everything subscribed."""
        if self._sessions:
            self.dispatcher.stats.reconnects += 1
        self._sessions += 1
        self._receiving = True
        self._mark_up()
        if self._ready is not None and not self._ready.done():
            self._ready.set_result(None)

    def _unavailable(self, what: str, error: BaseException | None = None) -> EngineUnavailableError:
        cause = f": {type(error).__name__}: {error}" if error is not None else ""
        return EngineUnavailableError(f"redis engine {self.name!r} ({self._where}) {what}{cause}")

    # --- lifecycle --------------------------------------------------------------------

    async def start(self) -> None:
        if self._receiver is not None:
            return
        connection_class, kwargs = self.connection_settings()
        pool = aioredis.ConnectionPool(
            connection_class=connection_class,
            max_connections=self.settings.pool_size,
            **{
                **kwargs,
                "socket_timeout": self._timeout + _STREAM_BLOCK,
                "client_name": self.client_name("control"),
                # Once more on a pooled connection that the server had closed meanwhile.
                "retry": Retry(NoBackoff(), 1),
            },
        )
        self._redis = aioredis.Redis(connection_pool=pool)
        try:
            async with asyncio.timeout(self._timeout):
                await self._redis.ping()
        except (RedisError, *_LINK_ERRORS) as exc:
            await self._redis.aclose(close_connection_pool=True)
            self._redis = None
            raise self._unavailable("cannot reach Redis", exc) from exc
        loop = asyncio.get_running_loop()
        self._closing = False
        self._down = False
        self._sessions = 0
        if not self.streams:  # subscriptions made before start (or a start that failed)
            self._wires.clear()
            self._sub_wires.clear()
            for sub in list(self.dispatcher.subscriptions.items()):
                self._register_wires(sub)
        self._ready = loop.create_future()
        self._publisher = loop.create_task(self._publish_loop())
        self._receiver = loop.create_task(self._receive_loop())
        if self.streams:
            self._helpers = [
                loop.create_task(self._ack_loop()),
                loop.create_task(self._maintain_loop()),
            ]
        try:
            async with asyncio.timeout(self._timeout):
                await asyncio.shield(self._ready)
                if self.streams:
                    self._since.clear()
                    for sub in list(self.dispatcher.subscriptions.items()):
                        await self._attach_streams(sub)
        except (RedisError, *_LINK_ERRORS) as exc:
            await self._shutdown_connections()
            raise self._unavailable("could not subscribe at start", exc) from exc

    async def stop(self, timeout: float) -> None:
        # No new messages while the fan-out drains; what it settles is still acknowledged.
        await _cancel(self._receiver)
        self._receiver = None
        self._receiving = False
        await super().stop(timeout)
        await self._shutdown_connections()

    async def _shutdown_connections(self) -> None:
        await _cancel(self._receiver)
        self._receiver = None
        if self._publisher is not None:  # publishes in flight end by their own deadline
            self._closing = True
            self._wake_publisher()
            try:
                async with asyncio.timeout(self._timeout + 1.0):
                    await asyncio.shield(self._publisher)
            except TimeoutError:
                pass
            await _cancel(self._publisher)
            self._publisher = None
        for task in list(self._helpers):
            await _cancel(task)
        self._helpers = []
        if self.streams and self._redis is not None:
            try:
                await self._flush_acks()
            except (RedisError, *_LINK_ERRORS) as exc:
                logger.warning(
                    "redis engine %s could not acknowledge %d entries at stop (they will be "
                    "delivered again): %s",
                    self.name,
                    len(self._acks),
                    exc,
                )
            await self._leave_groups()
        if self._redis is not None:
            await self._redis.aclose(close_connection_pool=True)
            self._redis = None
        self._link = None
        self._wires.clear()
        self._sub_wires.clear()
        self._keys.clear()
        self._joining.clear()
        self._group_keys.clear()
        self._since.clear()
        self._unwanted.clear()
        self._inflight.clear()
        self._acks.clear()
        self._pending_rereads.clear()

    # --- subscriptions ----------------------------------------------------------------

    async def subscribe(self, sub: Subscription) -> None:
        self.dispatcher.add(sub)
        try:
            if self.streams:
                self._unwanted.clear()
                if self._receiver is not None:
                    await self._attach_streams(sub)
            else:
                await self._attach_pubsub(sub)
        except BaseException as exc:
            await self.unsubscribe(sub)
            if isinstance(exc, RedisError | OSError):
                raise self._unavailable(f"could not subscribe to {sub.topic!r}", exc) from exc
            raise

    async def unsubscribe(self, sub: Subscription) -> None:
        self.dispatcher.remove(sub)
        if self.streams:
            self._detach_streams(sub)
        else:
            await self._detach_pubsub(sub)

    def targets(self, sub: Subscription) -> list[Target]:
        """The channels (exact) and glob patterns that carry ``sub``'s events."""
        prefix = self.prefix
        topic = sub.topic
        is_pattern = topic.endswith("*")
        literal = topic[:-1] if is_pattern else topic
        head = prefix if sub.tenant is None else f"{prefix}{sub.tenant}:"
        found: list[Target] = []
        if is_pattern:
            found.append((True, glob_escape(head + literal) + "*", _starts_with(head + literal)))
        else:
            found.append((False, head + literal, None))
        if sub.all_tenants and sub.tenant is None and topic != "*":
            glob = f"{glob_escape(prefix)}*:{glob_escape(literal)}{'*' if is_pattern else ''}"
            found.append((True, glob, _any_tenant(prefix, literal, is_pattern)))
        return found

    def channel(self, tenant: str | None, topic: str) -> str:
        """The channel (or stream key) of events of ``topic`` published by ``tenant``."""
        if tenant is None:
            return self.prefix + topic
        return f"{self.prefix}{tenant}:{topic}"

    def _route(self, raw: bytes) -> _Route:
        route = self._routes.get(raw)
        if route is None:
            route = self._parse_route(raw)
            if len(self._routes) >= _ROUTE_CACHE_LIMIT:
                self._routes.clear()
            self._routes[raw] = route
        return route

    def _parse_route(self, raw: bytes) -> _Route:
        try:
            name = raw.decode()
        except UnicodeDecodeError:
            return _Route(None, "", f"name {raw!r} is not UTF-8")
        if not name.startswith(self.prefix):
            return _Route(None, "", f"{name!r} does not start with {self.prefix!r}")
        tenant, colon, topic = name[len(self.prefix) :].rpartition(":")
        try:
            validate_topic(topic)
            if colon:
                validate_tenant(tenant)
        except ValueError as exc:
            return _Route(None, "", f"{name!r} is not a channel of the bus: {exc}")
        return _Route(tenant if colon else None, topic)

    def _wanted(self, route: _Route) -> bool:
        """Whether a local subscription takes events found at ``route``."""
        tenant = route.tenant
        return any(
            s.tenant == tenant or (s.all_tenants and s.tenant is None)
            for s in self.dispatcher.subscriptions.resolve(route.topic)
        )

    def _decode_at(self, route: _Route, data: bytes) -> Event:
        event = decode(data)
        if event.topic != route.topic:
            raise EventDecodeError(
                f"envelope type {event.topic!r} does not match the topic {route.topic!r} "
                "of the channel it came from"
            )
        if event.tenant != route.tenant:
            if event.tenant is not None:
                raise EventDecodeError(
                    f"envelope tenant {event.tenant!r} does not match the channel's tenant "
                    f"{route.tenant!r}"
                )
            event = event._replace(tenant=route.tenant)  # a producer that only names channels
        return event

    def _decode_failed(self, where: bytes, error: str) -> None:
        self.dispatcher.stats.decode_errors += 1
        now = time.monotonic()
        if now - self._decode_logged_at < _DECODE_LOG_INTERVAL:
            self._decode_unlogged += 1
            return
        more = (
            f" ({self._decode_unlogged} more since the last report)"
            if self._decode_unlogged
            else ""
        )
        logger.warning(
            "redis engine %s skipped a message it cannot decode on %s: %s%s",
            self.name,
            where.decode(errors="replace"),
            error,
            more,
        )
        self._decode_logged_at = now
        self._decode_unlogged = 0

    # --- publishing -------------------------------------------------------------------

    async def publish(self, event: Event) -> None:
        if self._publisher is None or self._publisher.done() or self._closing:
            raise self._unavailable(f"is not running: cannot publish to {event.topic!r}")
        data = encode(event)
        name = self.channel(event.tenant, event.topic)
        if self.streams:
            command: tuple[Any, ...] = ("XADD", name, *self._maxlen, "*", "event", data)
        else:
            command = ("PUBLISH", name, data)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        self._outbox.append(_Pending(command, future, loop.time() + self._timeout, event.topic))
        self._wake_publisher()
        await future
        if self.streams and self._since and name not in self._keys:
            self._note_stream(name)

    def _wake_publisher(self) -> None:
        wakeup = self._outbox_wakeup
        if wakeup is not None and not wakeup.done():
            wakeup.set_result(None)

    async def _publish_loop(self) -> None:
        """Send what publishers queued, in pipelines of up to ``batchSize`` commands; each
        publisher gets its own result. Fails a publish once its deadline has passed."""
        loop = asyncio.get_running_loop()
        outbox = self._outbox
        conn: _Link | None = None
        failures = 0
        try:
            while True:
                if not outbox:
                    if self._closing:
                        return
                    self._outbox_wakeup = loop.create_future()
                    await self._outbox_wakeup
                    self._outbox_wakeup = None
                    continue
                batch = self._next_batch(loop.time())
                if not batch:
                    continue
                try:
                    async with asyncio.timeout_at(min(p.deadline for p in batch)):
                        if conn is None:
                            conn = await self._open("publisher")
                        await _pipeline(conn, batch)
                except _LINK_ERRORS as exc:
                    self._mark_down(exc)
                    self._publish_error = exc
                    await _close(conn)
                    conn = None
                    outbox.extendleft(reversed([p for p in batch if not p.future.done()]))
                    failures += 1
                    pause = self._backoff.compute(failures)
                    if outbox:
                        pause = min(pause, max(0.0, min(p.deadline for p in outbox) - loop.time()))
                    await asyncio.sleep(pause)
                    continue
                failures = 0
                self._publish_error = None
                if self._down and self._receiving:
                    self._mark_up()
        finally:
            await _close(conn)
            while outbox:
                pending = outbox.popleft()
                if not pending.future.done():
                    pending.future.set_exception(
                        self._unavailable(f"stopped before publishing to {pending.topic!r}")
                    )

    def _next_batch(self, now: float) -> list[_Pending]:
        batch: list[_Pending] = []
        outbox = self._outbox
        limit = self.settings.batch_size
        while outbox and len(batch) < limit:
            pending = outbox.popleft()
            if pending.future.done():  # its publisher was cancelled
                continue
            if pending.deadline <= now:
                pending.future.set_exception(
                    self._unavailable(
                        f"could not publish to {pending.topic!r} within {self._timeout}s",
                        self._publish_error,
                    )
                )
                continue
            batch.append(pending)
        return batch

    # --- receiving --------------------------------------------------------------------

    async def _receive_loop(self) -> None:
        """Keep one receiving connection: connect, (re)subscribe, read, and on failure start
        over after a backoff."""
        failures = 0
        while True:
            try:
                conn = await self._open("receiver")
            except _LINK_ERRORS as exc:
                self._mark_down(exc)
                failures += 1
                await asyncio.sleep(self._backoff.compute(failures))
                continue
            try:
                if self.streams:
                    await self._stream_session(conn)
                else:
                    await self._pubsub_session(conn)
            except _LINK_ERRORS as exc:
                self._mark_down(exc)
                failures = 0
            except Exception as exc:  # a bug must not end the engine's reception for good
                logger.exception("redis engine %s: receiving failed; reconnecting", self.name)
                self._mark_down(exc)
            finally:
                self._receiving = False
                self._link = None
                self._reader_id = None
                await _close(conn)
            failures += 1
            await asyncio.sleep(self._backoff.compute(failures))

    # --- pub/sub ----------------------------------------------------------------------

    async def _attach_pubsub(self, sub: Subscription) -> None:
        new = self._register_wires(sub)
        if self._link is not None and new:
            await self._request(self._link, new, subscribe=True)
        waits = [w.confirmed for w in self._sub_wires[sub] if not w.confirmed.done()]
        if waits and self._receiver is not None:  # before start, start() subscribes
            async with asyncio.timeout(self._timeout):
                for confirmed in waits:
                    await asyncio.shield(confirmed)

    def _register_wires(self, sub: Subscription) -> list[_Wire]:
        """Count ``sub`` in the Redis-side subscriptions it needs; returns those it creates."""
        loop = asyncio.get_running_loop()
        wires = self._sub_wires.setdefault(sub, [])
        new: list[_Wire] = []
        for is_pattern, name, matcher in self.targets(sub):
            raw = name.encode()
            wire = self._wires.get((is_pattern, raw))
            if wire is None:
                wire = _Wire(is_pattern, raw, loop.create_future())
                self._wires[(is_pattern, raw)] = wire
                if matcher is not None:
                    self._matchers[raw] = matcher
                new.append(wire)
            wire.refs += 1
            wires.append(wire)
        return new

    async def _detach_pubsub(self, sub: Subscription) -> None:
        for wire in self._sub_wires.pop(sub, ()):
            wire.refs -= 1
            key = (wire.is_pattern, wire.raw)
            if wire.refs == 0 and self._wires.get(key) is wire:
                del self._wires[key]
                link = self._link
                if link is not None:
                    if link.awaiting:
                        link.awaiting.discard(key)
                        self._check_ready(link)
                    await self._request(link, [wire], subscribe=False)

    async def _request(self, link: _PubSubLink, wires: list[_Wire], subscribe: bool) -> None:
        """Send (P)SUBSCRIBE or (P)UNSUBSCRIBE for ``wires``, noting which confirmation will
        tell that each took effect. A broken link is left to the receive loop."""
        for is_pattern in (False, True):
            names = [w for w in wires if w.is_pattern is is_pattern]
            if not names:
                continue
            verb = ("P" if is_pattern else "") + ("SUBSCRIBE" if subscribe else "UNSUBSCRIBE")
            async with link.lock:
                if self._link is not link or not link.conn.is_connected:
                    return
                for wire in names:
                    key = (is_pattern, wire.raw)
                    link.sent[key] = ticket = link.sent.get(key, 0) + 1
                    if subscribe:
                        wire.link, wire.ticket = link, ticket
                try:
                    await link.conn.send_command(verb, *(w.raw for w in names), check_health=False)
                except _LINK_ERRORS:
                    return

    async def _pubsub_session(self, conn: _Link) -> None:
        link = _PubSubLink(conn)
        self._link = link
        wires = list(self._wires.values())
        link.awaiting = {(w.is_pattern, w.raw) for w in wires}
        await self._request(link, wires, subscribe=True)
        self._check_ready(link)
        await self._read_pubsub(link)

    def _check_ready(self, link: _PubSubLink) -> None:
        if link.awaiting is not None and not link.awaiting:
            link.awaiting = None
            self._session_ready()

    async def _read_pubsub(self, link: _PubSubLink) -> None:
        conn = link.conn
        interval = self.settings.health_check_interval
        awaiting_pong = False
        while True:
            reply = await conn.read_response(timeout=interval)
            if reply is None:  # quiet for a while: is the connection still alive?
                if awaiting_pong:
                    raise RedisConnectionError(f"no answer to PING within {interval}s")
                awaiting_pong = True
                await conn.send_command("PING", check_health=False)
                continue
            awaiting_pong = False
            if type(reply) is not list:
                continue  # PONG
            kind = reply[0]
            if kind == b"message":
                await self._receive(reply[1], reply[2])
            elif kind == b"pmessage":
                if self._owns(link, reply[1], reply[2]):
                    await self._receive(reply[2], reply[3])
            elif kind in (b"subscribe", b"psubscribe", b"unsubscribe", b"punsubscribe"):
                self._confirmation(link, kind, reply[1])

    def _confirmation(self, link: _PubSubLink, kind: bytes, raw: bytes) -> None:
        is_pattern = kind[0] == 0x70  # b"p"
        key = (is_pattern, raw)
        link.acked[key] = count = link.acked.get(key, 0) + 1
        subscribed = kind == b"subscribe" or kind == b"psubscribe"
        if is_pattern:
            link.owners.clear()
            if subscribed:
                link.patterns[raw] = self._matchers.get(raw, _never)
            else:
                link.patterns.pop(raw, None)
        elif subscribed:
            link.channels.add(raw)
        else:
            link.channels.discard(raw)
        wire = self._wires.get(key)
        if subscribed and wire is not None and wire.link is link and wire.ticket <= count:
            if not wire.confirmed.done():
                wire.confirmed.set_result(None)
            if link.awaiting:
                link.awaiting.discard(key)
                self._check_ready(link)

    def _owns(self, link: _PubSubLink, pattern: bytes, channel: bytes) -> bool:
        """Whether the copy of a message that came through ``pattern`` is the one to hand on.

        Redis sends one copy per matching subscription of the connection; the exact channel's
        copy wins, else the smallest matching pattern's. The sets are those Redis confirmed,
        so they are the ones it used for this message.
        """
        if channel in link.channels:
            return False
        owner = link.owners.get(channel, b"")
        if owner == b"":
            text = channel.decode(errors="replace")
            owner = min((p for p, match in link.patterns.items() if match(text)), default=None)
            if len(link.owners) >= _ROUTE_CACHE_LIMIT:
                link.owners.clear()
            link.owners[channel] = owner
        return owner is None or owner == pattern

    async def _receive(self, channel: bytes, data: bytes) -> None:
        route = self._route(channel)
        if route.error is not None:
            self._decode_failed(channel, route.error)
            return
        if not self._wanted(route):  # e.g. another tenant's event under a broad pattern
            return
        try:
            event = self._decode_at(route, data)
        except EventDecodeError as exc:
            self._decode_failed(channel, str(exc))
            return
        await self._hand_on(event, None)

    async def _hand_on(self, event: Event, settlement: Callable[[], None] | None) -> None:
        """Dispatch a received event. Its handlers run in its tenant's context, as they do
        for a publisher in ``tenant_context`` in this process: a tenant is what crosses the
        wire of the publisher's context."""
        if event.tenant is None:
            await self.dispatcher.dispatch(event, settlement)
            return
        token = current_tenant_var.set(event.tenant)
        try:
            await self.dispatcher.dispatch(event, settlement)
        finally:
            current_tenant_var.reset(token)

    # --- streams: subscriptions -------------------------------------------------------

    async def _attach_streams(self, sub: Subscription) -> None:
        exact = [name for is_pattern, name, _ in self.targets(sub) if not is_pattern]
        globs = [name for is_pattern, name, _ in self.targets(sub) if is_pattern]
        if globs:
            seconds, micros = await self._redis.time()
            self._since[sub] = (seconds * 1000 + micros // 1000, globs)
            self._maintain_wakeup.set()
        for key in exact:
            await self._join(key, "$")
        if globs:
            await self._discover(globs)

    def _detach_streams(self, sub: Subscription) -> None:
        self._since.pop(sub, None)
        self._unwanted.clear()
        dropped = [key for key in self._keys if not self._wanted(self._route(self._keys[key]))]
        for key in dropped:
            del self._keys[key]
        if dropped:
            self._keys_updated()

    async def _join(self, key: str, start: str) -> None:
        """Read ``key`` from now on, in the engine's group, from ``start`` if the group is new
        (a per-process group that stopped reading the key is moved to ``start``)."""
        while key in self._joining:
            await asyncio.shield(self._joining[key])
        if key in self._keys:
            return
        done = asyncio.get_running_loop().create_future()
        self._joining[key] = done
        try:
            try:
                await self._redis.xgroup_create(key, self.group, start, mkstream=True)
            except ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise
                if not self.durable_group:
                    await self._redis.xgroup_setid(key, self.group, start)
                else:
                    # Entries this consumer left pending while it did not want the key.
                    self._pending_rereads.add(key.encode())
            self._group_keys.add(key)
            self._keys[key] = key.encode()
            self._keys_updated()
        finally:
            del self._joining[key]
            done.set_result(None)

    def _start_for(self, key: str) -> str:
        """Where a pattern subscription starts reading a key it found: at the moment the
        earliest of the subscriptions that want it subscribed."""
        route = self._route(key.encode())
        since = [
            ms
            for sub, (ms, _) in self._since.items()
            if matches(sub.topic, route.topic) and sub.accepts(route.tenant)
        ]
        return f"{min(since)}-0" if since else "$"

    async def _discover(self, globs: Iterable[str] | None = None) -> None:
        """Join the existing streams that pattern subscriptions want."""
        if globs is None:
            globs = {glob for _, found in self._since.values() for glob in found}
        for glob in globs:
            cursor = 0
            while True:
                cursor, found = await self._redis.scan(
                    cursor, match=glob, count=1000, _type="stream"
                )
                for raw in found:
                    key = raw.decode(errors="replace")
                    if key not in self._keys and self._wanted(self._route(raw)):
                        await self._join(key, self._start_for(key))
                if not cursor:
                    break

    def _note_stream(self, key: str) -> None:
        """This process just published to ``key``: join it now if a pattern wants it, rather
        than at the next discovery."""
        if key in self._unwanted or key in self._joining:
            return
        if not self._wanted(self._route(key.encode())):
            self._unwanted.add(key)
            return
        task = asyncio.get_running_loop().create_task(self._join_quietly(key))
        self._helpers.append(task)
        task.add_done_callback(self._forget_helper)

    def _forget_helper(self, task: asyncio.Task[None]) -> None:
        if task in self._helpers:
            self._helpers.remove(task)

    async def _join_quietly(self, key: str) -> None:
        try:
            await self._join(key, self._start_for(key))
        except _LINK_ERRORS as exc:
            self._mark_down(exc)  # the next discovery joins it
        except RedisError as exc:
            logger.warning("redis engine %s cannot read stream %s: %s", self.name, key, exc)

    def _keys_updated(self) -> None:
        self._keys_changed.set()
        if self._reader_blocked and self._reader_id is not None and self._redis is not None:
            # Wake the reader from its blocking read, so that it reads the new key set now.
            task = asyncio.get_running_loop().create_task(self._unblock(self._reader_id))
            self._helpers.append(task)
            task.add_done_callback(self._forget_helper)

    async def _unblock(self, reader_id: int) -> None:
        with contextlib.suppress(*_LINK_ERRORS):
            await self._redis.client_unblock(reader_id)

    async def _leave_groups(self) -> None:
        """A per-process group goes; in a shared group, this consumer goes if it holds
        nothing pending (what it holds is claimed by the others)."""
        for key in sorted(self._group_keys):
            try:
                async with asyncio.timeout(self._timeout):
                    if not self.durable_group:
                        await self._redis.xgroup_destroy(key, self.group)
                    elif not await self._redis.xpending_range(
                        key, self.group, "-", "+", 1, consumername=self.consumer
                    ):
                        await self._redis.xgroup_delconsumer(key, self.group, self.consumer)
            except (TimeoutError, *_LINK_ERRORS) as exc:
                logger.warning(
                    "redis engine %s could not leave group %s on %s: %s",
                    self.name,
                    self.group,
                    key,
                    exc,
                )

    # --- streams: reading -------------------------------------------------------------

    async def _stream_session(self, conn: _Link) -> None:
        self._reader_id = int(await _call(conn, self._timeout, "CLIENT", "ID"))
        await self._rejoin()
        self._session_ready()
        await self._read_own_pending(conn, list(self._keys.values()))
        group, consumer = self.group, self.consumer
        count = self.settings.read_count
        block_ms = int(_STREAM_BLOCK * 1000)
        while True:
            keys = list(self._keys.values())
            self._keys_changed.clear()
            if self._pending_rereads:
                rereads = [key for key in keys if key in self._pending_rereads]
                self._pending_rereads.clear()
                await self._read_own_pending(conn, rereads)
            if not keys:
                try:
                    async with asyncio.timeout(self.settings.health_check_interval):
                        await self._keys_changed.wait()
                except TimeoutError:
                    await _call(conn, self._timeout, "PING")
                continue
            command = ("XREADGROUP", "GROUP", group, consumer, "COUNT", count, "BLOCK", block_ms)
            self._reader_blocked = True
            try:
                reply = await _call(
                    conn,
                    _STREAM_BLOCK + self._timeout,
                    *command,
                    "STREAMS",
                    *keys,
                    *(">",) * len(keys),
                )
            except ResponseError as exc:
                if "NOGROUP" not in str(exc):
                    raise
                logger.warning("redis engine %s: %s; creating the group again", self.name, exc)
                await self._rejoin(force=True)
                continue
            finally:
                self._reader_blocked = False
            for key, entries in reply or ():
                for entry_id, fields in entries:
                    await self._entry(key, entry_id, fields)

    async def _rejoin(self, force: bool = False) -> None:
        """After a reconnection: make sure the group still exists on every key read (a
        restarted Redis without persistence lost them)."""
        for key in list(self._keys):
            try:
                await self._redis.xgroup_create(key, self.group, "$", mkstream=True)
            except ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise
            else:
                if not force:
                    logger.warning(
                        "redis engine %s: group %s was gone from %s; created it again",
                        self.name,
                        self.group,
                        key,
                    )

    async def _read_own_pending(self, conn: _Link, keys: list[bytes]) -> None:
        """Entries Redis delivered to this consumer that it never acknowledged (a reply lost
        with the connection, an entry of a key it did not want for a while): read them again,
        except those still being handled here."""
        cursors = dict.fromkeys(keys, b"0")
        while cursors:
            keys = list(cursors)
            reply = await _call(
                conn,
                self._timeout,
                "XREADGROUP",
                "GROUP",
                self.group,
                self.consumer,
                "COUNT",
                self.settings.read_count,
                "STREAMS",
                *keys,
                *(cursors[k] for k in keys),
            )
            progressed = set()
            for key, entries in reply or ():
                if entries:
                    progressed.add(key)
                    cursors[key] = entries[-1][0]
                    for entry_id, fields in entries:
                        await self._entry(key, entry_id, fields)
            cursors = {k: v for k, v in cursors.items() if k in progressed}

    async def _entry(self, key: bytes, entry_id: bytes, fields: Any) -> None:
        """Hand one stream entry to the local fan-out; it is acknowledged once settled."""
        token = (key, entry_id)
        if token in self._inflight:
            return
        route = self._route(key)
        if route.error is not None:
            self._decode_failed(key, route.error)
            self._ack(token)
            return
        if not self._wanted(route):
            if not self.durable_group:  # nobody else reads this group
                self._ack(token)
            return  # in a shared group, left pending for a consumer that wants it
        data = _event_field(fields)
        if data is None:
            self._decode_failed(key, f"entry {entry_id.decode()} has no 'event' field")
            self._ack(token)
            return
        try:
            event = self._decode_at(route, data)
        except EventDecodeError as exc:
            self._decode_failed(key, f"entry {entry_id.decode()}: {exc}")
            self._ack(token)
            return
        self._inflight.add(token)
        await self._hand_on(event, functools.partial(self._ack, token))

    # --- streams: acknowledging and maintenance ---------------------------------------

    def _ack(self, token: tuple[bytes, bytes]) -> None:
        self._acks.append(token)
        self._ack_wakeup.set()

    async def _ack_loop(self) -> None:
        failures = 0
        while True:
            await self._ack_wakeup.wait()
            self._ack_wakeup.clear()
            try:
                await self._flush_acks()
                failures = 0
            except _LINK_ERRORS as exc:
                self._mark_down(exc)
                failures += 1
                await asyncio.sleep(self._backoff.compute(failures))
                self._ack_wakeup.set()

    async def _flush_acks(self) -> None:
        """XACK what settled. When Redis is unreachable it stays queued, and its entries in
        flight, so that a re-read after reconnecting does not hand them out twice."""
        while self._acks:
            batch, self._acks = self._acks, []
            by_key: dict[bytes, list[bytes]] = {}
            for key, entry_id in batch:
                by_key.setdefault(key, []).append(entry_id)
            try:
                async with asyncio.timeout(self._timeout):
                    pipe = self._redis.pipeline(transaction=False)
                    for key, ids in by_key.items():
                        pipe.xack(key, self.group, *ids)
                    results = await pipe.execute(raise_on_error=False)
            except BaseException:
                self._acks[:0] = batch
                raise
            for key, result in zip(by_key, results, strict=True):
                if isinstance(result, Exception):  # e.g. the key or group was deleted
                    logger.warning(
                        "redis engine %s could not acknowledge entries of %s: %s",
                        self.name,
                        key.decode(errors="replace"),
                        result,
                    )
            self._inflight.difference_update(batch)

    async def _maintain_loop(self) -> None:
        """Discover pattern streams every ``scanInterval``; claim entries left pending by
        consumers that went away, every half ``claimIdle``."""
        loop = asyncio.get_running_loop()
        claim_every = min(max(self.settings.claim_idle / 2, 0.05), 30.0)
        next_scan = next_claim = loop.time()
        while True:
            now = loop.time()
            try:
                if self._since and now >= next_scan:
                    next_scan = now + self.settings.scan_interval
                    await self._discover()
                if now >= next_claim:
                    next_claim = now + claim_every
                    await self._claim()
            except _LINK_ERRORS as exc:
                self._mark_down(exc)
            except RedisError as exc:  # e.g. a stream deleted under the group
                logger.warning("redis engine %s: stream maintenance failed: %s", self.name, exc)
            wake = min(next_claim, next_scan) if self._since else next_claim
            # A new pattern subscription wakes the loop: its scans start now.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, wake - loop.time())):
                    await self._maintain_wakeup.wait()
            self._maintain_wakeup.clear()

    async def _claim(self) -> None:
        idle_ms = int(self.settings.claim_idle * 1000)
        for key, raw in list(self._keys.items()):
            cursor: Any = "0-0"
            for _ in range(100):  # bounded work per round; the next round continues
                cursor, entries, *_ = await self._redis.xautoclaim(
                    key, self.group, self.consumer, idle_ms, cursor, count=self.settings.read_count
                )
                for entry_id, fields in entries:
                    await self._entry(raw, entry_id, fields)
                if cursor in (b"0-0", "0-0"):
                    break


def _event_field(fields: Any) -> bytes | None:
    """The ``event`` field of an entry: a flat [field, value, ...] list from a raw read, a
    dict from redis-py's parsed replies, None for an entry deleted meanwhile."""
    if isinstance(fields, dict):
        value = fields.get(b"event")
        return value if isinstance(value, bytes) else None
    if isinstance(fields, list):
        for i in range(0, len(fields) - 1, 2):
            if fields[i] == b"event":
                value = fields[i + 1]
                return value if isinstance(value, bytes) else None
    return None


def _starts_with(literal: str) -> Callable[[str], bool]:
    return lambda channel: channel.startswith(literal)


def _any_tenant(prefix: str, literal: str, is_pattern: bool) -> Callable[[str], bool]:
    """The channels ``<prefix>*:<literal>`` (or ``...*:<literal>*``) matches as a glob."""
    needle = ":" + literal
    start = len(prefix)
    if is_pattern:
        return lambda channel: channel.startswith(prefix) and needle in channel[start:]
    return lambda channel: channel.startswith(prefix) and channel[start:].endswith(needle)


def _never(channel: str) -> bool:
    return False


async def _pipeline(conn: _Link, batch: list[_Pending]) -> None:
    """Send ``batch`` in one write and read each reply; a command Redis refuses fails only its
    own publisher."""
    await conn.send_packed_command(conn.pack_commands(p.command for p in batch), check_health=False)
    for pending in batch:
        try:
            await conn.read_response()
        except ResponseError as exc:
            if not pending.future.done():
                pending.future.set_exception(
                    EngineUnavailableError(f"redis refused the publish to {pending.topic!r}: {exc}")
                )
            continue
        if not pending.future.done():
            pending.future.set_result(None)


async def _call(conn: _Link, timeout: float, *args: Any) -> Any:
    async with asyncio.timeout(timeout):
        await conn.send_command(*args, check_health=False)
        return await conn.read_response(timeout=math.inf)


async def _close(conn: _Link | None) -> None:
    if conn is not None:
        # Closing a broken connection may fail; it is gone either way.
        with contextlib.suppress(Exception):
            await conn.disconnect(nowait=True)


async def _cancel(task: asyncio.Task[None] | None) -> None:
    """Cancel ``task`` and wait for it; what it raised is taken (and logged if unexpected)."""
    if task is None:
        return
    task.cancel()
    for result in await asyncio.gather(task, return_exceptions=True):
        if isinstance(result, Exception):
            logger.error("redis engine task %s failed: %r", task.get_name(), result)
