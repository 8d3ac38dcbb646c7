"""Prometheus metrics and `/healthz` on `--metrics-port`, read from the feeder at scrape time.

Nothing on the hot path touches a metric: the collector derives every value from counters the
feeder keeps anyway (normalizer counts, connection stats, outbox depth, batch timings).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector


if TYPE_CHECKING:
    from feeder.app import Feeder

__all__ = ["FeederCollector", "serve_metrics"]


class FeederCollector(Collector):
    """Turns one Feeder's state into Prometheus metric families."""

    def __init__(self, feeder: Feeder) -> None:
        self.feeder = feeder

    def collect(self) -> Iterator[Metric]:
        f = self.feeder
        counts: dict[str, int] = {}
        for conn in f.connections:
            for name, value in conn.normalizer.counts.items():
                counts[name] = counts.get(name, 0) + value
        yield _counter("polybus_frames", "WebSocket frames received", counts.get("frames", 0))
        yield _by_label("polybus_events", "events normalized, by type", "type", counts, "event.")
        yield _by_label("polybus_filtered", "frames/elements deliberately filtered, by reason",
                        "reason", counts, "filtered.")
        yield _by_label("polybus_quarantined", "frames/elements quarantined, by reason",
                        "reason", counts, "quarantine.")
        yield _counter("polybus_published", "entries written to Redis", f.published)
        yield _counter("polybus_bbo_mismatches", "top-of-book checks failed", f.mirror.mismatches)
        conn_metrics = {
            "reconnects": CounterMetricFamily("polybus_reconnects", "reconnects", labels=["conn"]),
            "resubscribes": CounterMetricFamily("polybus_resubscribes", "resubscribe frames sent",
                                                labels=["conn"]),
            "rejected": CounterMetricFamily("polybus_handshakes_rejected",
                                            "handshakes refused (e.g. 429)", labels=["conn"]),
        }
        silence = GaugeMetricFamily("polybus_data_silence_seconds", "seconds since the last "
                                    "data frame", labels=["conn"])
        pong = GaugeMetricFamily("polybus_pong_latency_seconds", "last PING→PONG time",
                                 labels=["conn"])
        up = GaugeMetricFamily("polybus_connection_up", "1 when subscribed", labels=["conn"])
        for conn in f.connections:
            label = [str(conn.cid)]
            for name, family in conn_metrics.items():
                family.add_metric(label, getattr(conn.stats, name))
            silence.add_metric(label, conn.silence)
            pong.add_metric(label, conn.stats.pong_latency)
            up.add_metric(label, 1.0 if conn.state.value == "subscribed" else 0.0)
        yield from conn_metrics.values()
        yield from (silence, pong, up)
        yield GaugeMetricFamily("polybus_queue_depth", "events waiting for Redis",
                                value=len(f.outbox))
        yield _counter("polybus_redis_batches", "batches written", f.batches)
        yield _counter("polybus_redis_batch_seconds", "time spent writing batches",
                       f.batch_seconds)
        books = GaugeMetricFamily("polybus_books", "books by status", labels=["status"])
        carried = len(f.carried())
        synced = len(f.mirror.synced)
        books.add_metric(["synced"], synced)
        books.add_metric(["not_synced"], max(carried - synced, 0))
        yield books
        yield GaugeMetricFamily("polybus_redis_up", "1 when Redis answers",
                                value=1.0 if f.redis_ok else 0.0)
        refused = GaugeMetricFamily("polybus_redis_writes_refused", "1 while Redis refuses "
                                    "writes (OOM, READONLY, NOPERM), by reason",
                                    labels=["reason"])
        if f.redis_refused:
            refused.add_metric([f.redis_refused], 1.0)
        yield refused
        yield _counter("polybus_redis_refusals", "times Redis started refusing writes",
                       f.refusals)
        yield _counter("polybus_events_discarded", "events dropped while Redis was lost or "
                       "refused writes (every book is resynced after)", f.outbox.discarded)


def _counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, value=value)


def _by_label(name: str, doc: str, label: str, counts: dict[str, int], prefix: str) -> Metric:
    family = CounterMetricFamily(name, doc, labels=[label])
    for key, value in sorted(counts.items()):
        if key.startswith(prefix):
            family.add_metric([key[len(prefix) :]], value)
    return family


async def serve_metrics(feeder: Feeder, host: str, port: int) -> asyncio.Server:
    """Serve `/metrics` (Prometheus text) and `/healthz` (200 ok / 503 degraded)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(FeederCollector(feeder))

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError, ValueError):
            line = await asyncio.wait_for(reader.readline(), 5)
            while (await reader.readline()).strip():
                pass  # headers: not needed
            parts = line.decode("latin-1").split()
            path = parts[1].split("?")[0] if len(parts) > 1 else "/"
            if path == "/metrics":
                body = generate_latest(registry)
                status, ctype = "200 OK", "text/plain; version=0.0.4"
            elif path == "/healthz":
                state = feeder.health()["state"]
                status = "200 OK" if state == "ok" else "503 Service Unavailable"
                ctype, body = "text/plain", f"{state}\n".encode()
            else:
                status, ctype, body = "404 Not Found", "text/plain", b"not found\n"
            head = (f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\n"
                    f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n")
            writer.write(head.encode() + body)
            await writer.drain()
        writer.close()

    return await asyncio.start_server(handle, host, port)
