"""How the engine reaches Redis: its own raw connections and the pooled control client.

The engine's long-lived connections (the publisher, the receiver) are raw redis-py
connections that it drives itself, with no redis-py retries: the kit's loops decide when to
try again, with its one backoff. Everything else (consumer groups, acknowledgements,
discovery) goes through one pooled ``redis.asyncio.Redis``.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import re
from collections.abc import Iterable
from typing import Any, Protocol, cast

import redis.asyncio as aioredis
from redis.asyncio.connection import Connection, SSLConnection, parse_url
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from .config import RedisEngineConfig

# A failure of the link to Redis, as opposed to Redis refusing one command (ResponseError);
# the builtin TimeoutError (of asyncio.timeout) is an OSError.
LINK_ERRORS = (RedisConnectionError, RedisTimeoutError, OSError)
STREAM_BLOCK = 1.0  # seconds an XREADGROUP waits for entries before it is sent again
_CLIENT_NAME_UNSAFE = re.compile(r"[^A-Za-z0-9._:/-]")  # CLIENT SETNAME takes no spaces


class Link(Protocol):
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


class Connections:
    """The engine's connections to one Redis."""

    def __init__(self, engine: str, settings: RedisEngineConfig) -> None:
        self.engine = engine
        self.settings = settings
        self.timeout = settings.publish_timeout
        self.control: Any = None  # redis.asyncio.Redis while started

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
        return _CLIENT_NAME_UNSAFE.sub("_", f"eventbus-{self.engine}-{role}")

    def open_control(self) -> None:
        """The pooled control client; it connects on first use."""
        connection_class, kwargs = self.connection_settings()
        pool = aioredis.ConnectionPool(
            connection_class=connection_class,
            max_connections=self.settings.pool_size,
            **{
                **kwargs,
                "socket_timeout": self.timeout + STREAM_BLOCK,
                "client_name": self.client_name("control"),
                # Once more on a pooled connection that the server had closed meanwhile.
                "retry": Retry(NoBackoff(), 1),
            },
        )
        self.control = aioredis.Redis(connection_pool=pool)

    async def close(self) -> None:
        control, self.control = self.control, None
        if control is not None:
            # The pool's connections may hang on a frozen server: drop them without goodbye.
            pool = control.connection_pool
            with contextlib.suppress(Exception):
                await pool.disconnect(inuse_connections=True)

    async def open(self, role: str) -> Link:
        """A new connection of the engine's own, named after its ``role``."""
        connection_class, kwargs = self.connection_settings()
        conn = cast(
            Link,
            connection_class(
                **{**kwargs, "socket_timeout": None, "client_name": self.client_name(role)}
            ),
        )
        try:
            async with asyncio.timeout(self.timeout):
                await conn.connect()
        except BaseException:
            await close(conn)
            raise
        return conn


async def call(conn: Link, timeout: float, *args: Any) -> Any:
    """Send one command on ``conn`` and read its reply, within ``timeout`` seconds."""
    async with asyncio.timeout(timeout):
        await conn.send_command(*args, check_health=False)
        return await conn.read_response(timeout=math.inf)


async def close(conn: Link | None) -> None:
    if conn is not None:
        # Closing a broken connection may fail; it is gone either way.
        with contextlib.suppress(Exception):
            await conn.disconnect(nowait=True)
