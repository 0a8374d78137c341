"""``python -m benchmarks [memory] [codec] [redis] [kafka] [kinesis] [--repeat N] [--profile]``.

With no part named, every part runs. A part that fails (Redis down, say) is reported as an
error and makes the exit status non-zero; the other parts still run.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import sys
import traceback

from . import codec, kafka_e2e, kinesis_e2e, memory, redis_e2e
from .profiling import profile_memory

PARTS = ("memory", "codec", "redis", "kafka", "kinesis")


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("parts", nargs="*", help=f"any of {', '.join(PARTS)} (default: all)")
    parser.add_argument(
        "--repeat", type=int, default=1, help="runs per cell; the median is shown (default 1)"
    )
    parser.add_argument(
        "--deliveries",
        type=int,
        default=200_000,
        help="memory: handler calls per run (default 200000)",
    )
    parser.add_argument(
        "--redis-events", type=int, default=20_000, help="redis: events per run (default 20000)"
    )
    parser.add_argument(
        "--kinesis-events",
        type=int,
        default=20_000,
        help="kinesis: events per run (default 20000)",
    )
    parser.add_argument(
        "--kafka-events", type=int, default=20_000, help="kafka: events per run (default 20000)"
    )
    parser.add_argument(
        "--codec-calls", type=int, default=50_000, help="codec: calls per run (default 50000)"
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="memory: also profile the bus (1 ordered subscriber) with cProfile",
    )
    args = parser.parse_args(argv)
    unknown = [p for p in args.parts if p not in PARTS]
    if unknown:
        parser.error(f"unknown part(s) {', '.join(unknown)}; choose from {', '.join(PARTS)}")
    return args


def main(argv: list[str]) -> int:
    args = parse(argv)
    parts = args.parts or list(PARTS)
    print(
        f"python {platform.python_version()} on {platform.system()} {platform.machine()}, "
        f"{os.cpu_count()} CPUs; repeat={args.repeat}",
        flush=True,
    )
    failed: list[str] = []
    for part in parts:
        try:
            if part == "memory":
                asyncio.run(memory.run(args.deliveries, args.repeat))
                if args.profile:
                    profile_memory(args.deliveries)
            elif part == "codec":
                codec.run(args.codec_calls, args.repeat)
            elif part == "kinesis":
                asyncio.run(kinesis_e2e.run(args.kinesis_events, args.repeat))
            elif part == "kafka":
                asyncio.run(kafka_e2e.run(args.kafka_events, args.repeat))
            else:
                asyncio.run(redis_e2e.run(args.redis_events, args.repeat))
        except Exception:
            print(f"\nERROR: part {part!r} failed:", flush=True)
            traceback.print_exc()
            failed.append(part)
    if failed:
        print(f"\nfailed parts: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
