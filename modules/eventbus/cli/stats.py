"""``stats``: the delivery counters of a running application, read from its ``/metrics``."""

from __future__ import annotations

import argparse
import asyncio
import json
import urllib.error
import urllib.request

from .session import CommandError, Session, format_table

STATS_FIELDS = ("delivered", "dropped", "failed", "decode_errors", "reconnects")


async def cmd_stats(args: argparse.Namespace) -> int:
    url, namespace = args.url, args.namespace
    if url is None:
        session = Session.from_args(args)
        await session.init()
        server = session.bus.config.metrics.prometheus
        if server is None:
            raise CommandError(
                "stats reads a running application's /metrics: pass --url, or set "
                "eventbus.metrics.prometheus in the settings (see --settings)"
            )
        if server.port == 0:
            raise CommandError("eventbus.metrics.prometheus.port is 0 (any free port): pass --url")
        host = "127.0.0.1" if server.host in ("0.0.0.0", "::", "") else server.host
        url = f"http://{host}:{server.port}/metrics"
        namespace = namespace or server.namespace
    text = await asyncio.to_thread(_fetch, url)
    stats = _parse_stats(text, namespace, url)
    if args.json:
        print(json.dumps(stats, indent=2))
    else:
        rows = [[name, *(int(values[f]) for f in STATS_FIELDS)] for name, values in stats.items()]
        print(format_table(["engine", *STATS_FIELDS], rows))
    return 0


def _fetch(url: str) -> str:
    if not url.startswith(("http://", "https://")):
        raise CommandError(f"--url must be an http:// or https:// address, got {url!r}")
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return str(response.read().decode("utf-8", "replace"))
    except urllib.error.HTTPError as exc:
        raise CommandError(f"cannot read {url}: HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise CommandError(f"cannot read {url}: {reason}") from None


def _parse_stats(text: str, namespace: str | None, url: str) -> dict[str, dict[str, float]]:
    try:
        from prometheus_client.parser import text_string_to_metric_families
    except ImportError:
        raise CommandError(
            "stats needs prometheus-client: pip install 'modular-eventbus[prometheus]'"
        ) from None
    samples: dict[str, dict[str, float]] = {}  # sample name -> engine -> value
    try:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if "engine" in sample.labels:
                    samples.setdefault(sample.name, {})[sample.labels["engine"]] = sample.value
    except ValueError as exc:
        raise CommandError(f"{url} is not Prometheus text: {exc}") from None
    if namespace is None:
        found = sorted(
            n.removesuffix("_delivered_total") for n in samples if n.endswith("_delivered_total")
        )
        if len(found) > 1:
            raise CommandError(f"{url} has several buses ({', '.join(found)}): pass --namespace")
        namespace = found[0] if found else "modular_eventbus"
    if f"{namespace}_delivered_total" not in samples:
        raise CommandError(f"{url} has no {namespace}_delivered_total: is it an event bus?")
    engines = sorted(samples[f"{namespace}_delivered_total"], key=lambda e: (e != "_all", e))
    return {
        engine: {
            f: samples.get(f"{namespace}_{f}_total", {}).get(engine, 0.0) for f in STATS_FIELDS
        }
        for engine in engines
    }
