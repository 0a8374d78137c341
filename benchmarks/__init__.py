"""Throughput and latency harness: ``python -m benchmarks`` (see docs/benchmarks.md)."""
