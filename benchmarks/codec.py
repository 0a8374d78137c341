"""The wire codec: per-event cost of ``encode(event) -> bytes`` and ``decode(bytes) -> Event``,
beside plain ``json.dumps``/``json.loads`` of the payload alone (the floor of any JSON codec).
"""

from __future__ import annotations

import importlib
import json
import statistics
import time
from collections.abc import Callable
from functools import partial
from typing import Any

from modules.eventbus import Event

from .common import format_seconds, print_table, quiet_gc

CODEC_MODULE = "modules.eventbus.codec"


def payload_of_size(size: int) -> dict[str, Any]:
    """A JSON object whose compact encoding is exactly ``size`` bytes."""
    base = {"id": 12345, "name": "benchmark", "t": 1700000000.123456, "pad": ""}
    pad = size - len(json.dumps(base, separators=(",", ":")))
    if pad < 0:
        raise ValueError(f"payloads smaller than {size - pad} bytes are not supported")
    return {**base, "pad": "x" * pad}


def sample_events() -> dict[str, Event]:
    payload = payload_of_size(200)
    return {
        "200 B payload": Event("bench-1", "bench.topic", payload, {}, time.time(), "eventbus"),
        "200 B + metadata, tenant, key": Event(
            "bench-2",
            "bench.topic",
            payload,
            {"region": "eu", "trace-id": "abc-123", "Mixed.Key": "x"},
            time.time(),
            "eventbus",
            "acme",
            "user-7",
        ),
    }


def per_call(fn: Callable[[], object], calls: int, repeat: int) -> float:
    """Median over ``repeat`` runs of the seconds per call of ``fn``."""
    times = []
    for _ in range(repeat):
        quiet_gc()
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        times.append((time.perf_counter() - start) / calls)
    return statistics.median(times)


def _json_encode(payload: Any) -> bytes:
    return json.dumps(payload).encode()


def run(calls: int, repeat: int) -> list[list[str]]:
    codec = importlib.import_module(CODEC_MODULE)
    encode: Callable[[Event], bytes] = codec.encode
    decode: Callable[[bytes], Event] = codec.decode
    rows: list[list[str]] = []
    for label, event in sample_events().items():
        wire = encode(event)
        decoded = decode(wire)
        if decoded.payload != event.payload or dict(decoded.metadata) != dict(event.metadata):
            raise AssertionError(f"codec round trip changed the event: {event} -> {decoded}")
        raw = json.dumps(event.payload).encode()
        enc = per_call(partial(encode, event), calls, repeat)
        dec = per_call(partial(decode, wire), calls, repeat)
        json_enc = per_call(partial(_json_encode, event.payload), calls, repeat)
        json_dec = per_call(partial(json.loads, raw), calls, repeat)
        rows.append(
            [
                label,
                str(len(wire)),
                format_seconds(enc),
                format_seconds(dec),
                format_seconds(json_enc),
                format_seconds(json_dec),
                f"{(enc + dec) / (json_enc + json_dec):.1f}x",
            ]
        )
    print_table(
        f"Codec: per event, median of {repeat} x {calls} calls",
        [
            "event",
            "envelope bytes",
            "encode",
            "decode",
            "json.dumps payload",
            "json.loads payload",
            "codec / plain json",
        ],
        rows,
    )
    return rows


def main(calls: int = 50_000, repeat: int = 1) -> None:
    run(calls, repeat)
