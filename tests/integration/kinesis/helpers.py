"""Helpers of the Kinesis engine tests: a bus on kinesalite, plain boto3, a server of a test's
own (with a data directory, so it can be killed and started again)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config

from modular import Application
from modules.eventbus import EventBusModule
from modules.eventbus.engines.kinesis import KinesisEngine

ROOT = Path(__file__).resolve().parents[3]
ENDPOINT = "http://127.0.0.1:4567"
ENGINE = "k"
REGION = "us-east-1"
KEYS = {"aws_access_key_id": "AKIDTEST", "aws_secret_access_key": "test-secret"}
# Short waits everywhere: the tests run against a local server.
FAST = {
    "pollInterval": "20ms",
    "shardDiscoveryInterval": "200ms",
    "checkpointInterval": "50ms",
    "connectTimeout": "5s",
    "reconnectMaxDelay": "200ms",
}


def stream_name() -> str:
    return f"test-{os.urandom(5).hex()}"


def engine_config(stream: str, endpoint: str = ENDPOINT, **extra: Any) -> dict[str, Any]:
    return {
        "endpointUrl": endpoint,
        "region": REGION,
        "accessKeyId": KEYS["aws_access_key_id"],
        "secretAccessKey": KEYS["aws_secret_access_key"],
        "streamName": stream,
        **FAST,
        **extra,
    }


def bus_settings(engine: dict[str, Any], **eventbus: Any) -> dict[str, Any]:
    """Application settings of a bus with one kinesis engine named ``k``."""
    return {
        "eventbus": {
            "engines": [{"name": ENGINE, "type": "kinesis", "config": engine}],
            "shutdownTimeout": "5s",
            **eventbus,
        }
    }


def new_app(engine: dict[str, Any], **eventbus: Any) -> Application:
    app = Application(bus_settings(engine, **eventbus), envvar_prefix=None)
    app.register_module(EventBusModule())
    return app


@asynccontextmanager
async def running_bus(engine: dict[str, Any], **eventbus: Any) -> AsyncIterator[EventBusModule]:
    """A started application holding a bus with one kinesis engine; stopped on exit."""
    app = new_app(engine, **eventbus)
    async with app:
        yield app.get_service("eventbus.provider", EventBusModule)


def engine_of(bus: EventBusModule) -> KinesisEngine:
    engine = bus.engine(ENGINE)
    assert isinstance(engine, KinesisEngine)
    return engine


def client(endpoint: str = ENDPOINT) -> Any:
    """A plain boto3 Kinesis client (no retries: a missing server fails at once)."""
    return boto3.client(
        "kinesis",
        endpoint_url=endpoint,
        region_name=REGION,
        config=Config(retries={"total_max_attempts": 1}, connect_timeout=2, read_timeout=10),
        **KEYS,
    )


def answers(endpoint: str = ENDPOINT) -> bool:
    """Whether an HTTP server answers at ``endpoint`` (kinesalite says 403 to a bare GET)."""
    try:
        with urllib.request.urlopen(endpoint, timeout=2):
            pass
    except urllib.error.HTTPError as exc:
        exc.close()
        return True
    except OSError:
        return False
    return True


def check_kinesalite(endpoint: str = ENDPOINT) -> None:
    """Fail (never skip) the test when the Kinesis API server does not answer."""
    if not answers(endpoint):
        pytest.fail(
            f"no Kinesis API server answers at {endpoint}; start it with `make services` "
            "(scripts/kinesis.sh start)",
            pytrace=False,
        )


def delete_stream(stream: str, endpoint: str = ENDPOINT) -> None:
    with contextlib.suppress(Exception):  # gone already, or the server of the test is gone
        client(endpoint).delete_stream(StreamName=stream)


def put_raw(stream: str, data: bytes, key: str = "raw", endpoint: str = ENDPOINT) -> None:
    client(endpoint).put_record(StreamName=stream, Data=data, PartitionKey=key)


def all_records(stream: str) -> list[dict[str, Any]]:
    """Every record of the stream (with its ``ShardId``), read with plain boto3 from the start
    of every shard."""
    kinesis = client()
    found: list[dict[str, Any]] = []
    for shard in kinesis.list_shards(StreamName=stream)["Shards"]:
        iterator = kinesis.get_shard_iterator(
            StreamName=stream, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
        )["ShardIterator"]
        while iterator:
            reply = kinesis.get_records(ShardIterator=iterator, Limit=10_000)
            found.extend({**r, "ShardId": shard["ShardId"]} for r in reply["Records"])
            if not reply["Records"]:
                break
            iterator = reply.get("NextShardIterator")
    return found


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Kinesalite:
    """A kinesalite of one test, on a free port, with its data in ``data_dir`` (so that it
    survives a restart, even ``kill -9``)."""

    def __init__(self, data_dir: Path, port: int | None = None) -> None:
        self.data_dir = data_dir
        self.port = port or free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None

    async def start(self) -> None:
        node = shutil.which("node")
        if node is None or not (ROOT / "node_modules" / "kinesalite").is_dir():
            pytest.fail("kinesalite is not installed: run `make services`", pytrace=False)
        self.process = subprocess.Popen(  # noqa: ASYNC220 - returns at once
            [node, str(ROOT / "scripts" / "kinesalite.js"), str(self.port), str(self.data_dir)],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 20
        while not await asyncio.to_thread(answers, self.endpoint):
            if self.process.poll() is not None or loop.time() > deadline:
                raise AssertionError(f"kinesalite did not come up on port {self.port}")
            await asyncio.sleep(0.05)

    async def kill(self, sig: int = signal.SIGKILL) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        process.send_signal(sig)
        await asyncio.to_thread(process.wait, 10)

    def freeze(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)


EXPIRED_ITERATOR_JS = """
const db = require('kinesalite/db')
const now = Date.now
Date.now = () => now() - 6 * 60 * 1000  // six minutes ago: past the five-minute limit
const [stream, shard, seq] = process.argv.slice(1)
process.stdout.write(db.createShardIterator(stream, shard, seq))
"""


def expired_iterator(stream: str, shard: str, sequence: str) -> str:
    """A shard iterator as kinesalite makes them, made six minutes ago: kinesalite answers
    it with ExpiredIteratorException, as Kinesis does after five minutes."""
    node = shutil.which("node")
    assert node is not None, "node is needed (it runs kinesalite)"
    done = subprocess.run(
        [node, "-e", EXPIRED_ITERATOR_JS, stream, shard, sequence],
        cwd=ROOT,
        capture_output=True,
        check=True,
        timeout=30,
    )
    return done.stdout.decode()
