"""Prometheus metrics and `/healthz` on `--metrics-port`, read from the feeder at scrape time.

Nothing on the hot path touches a metric: the collector derives every value from counters the
feeder keeps anyway (normalizer counts, connection stats, outbox depth, batch timings).

The endpoint is served by aiohttp's low-level server and bounded so that no client — a
scraper gone wrong, or 1,000 half-sent requests — can take the feeder's descriptors, which its
WebSocket reconnects need (see `BoundedServer`). It binds 127.0.0.1 unless told otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections import OrderedDict
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector


if TYPE_CHECKING:
    from polybus.feeder.app import Feeder

__all__ = ["BoundedServer", "FeederCollector", "MetricsServer", "serve_metrics"]

MAX_CONNECTIONS = 64
"""Open connections to the metrics port at most; a new one beyond that evicts the oldest."""
BACKLOG = 32
"""The kernel's queue of connections not yet accepted (they hold no descriptor of ours)."""
CONNECTION_TIMEOUT = 5.0
"""Seconds a connection may live: headers, answer and all (one request per connection)."""


class FeederCollector(Collector):
    """Turns one Feeder's state into Prometheus metric families."""

    def __init__(self, feeder: Feeder, server: BoundedServer | None = None) -> None:
        self.feeder = feeder
        self.server = server

    def collect(self) -> Iterator[Metric]:
        f = self.feeder
        counts = dict(f.counts)
        yield _counter("polybus_frames", "WebSocket frames received", counts.get("frames", 0))
        yield _by_label("polybus_events", "events normalized, by type", "type", counts, "event.")
        yield _by_label(
            "polybus_filtered",
            "frames/elements deliberately filtered, by reason",
            "reason",
            counts,
            "filtered.",
        )
        yield _by_label(
            "polybus_quarantined",
            "frames/elements quarantined, by reason",
            "reason",
            counts,
            "quarantine.",
        )
        yield _counter("polybus_published", "entries written to Redis", f.published)
        yield _counter("polybus_bbo_mismatches", "top-of-book checks failed", f.mirror.mismatches)
        yield _by_label(
            "polybus_ladder",
            "resync-ladder rungs climbed and handovers, by rung",
            "rung",
            f.ladder_counts(),
            "",
        )
        conn_metrics = {
            "reconnects": CounterMetricFamily("polybus_reconnects", "reconnects", labels=["conn"]),
            "resubscribes": CounterMetricFamily(
                "polybus_resubscribes", "resubscribe frames sent", labels=["conn"]
            ),
            "rejected": CounterMetricFamily(
                "polybus_handshakes_rejected", "handshakes refused (e.g. 429)", labels=["conn"]
            ),
        }
        silence = GaugeMetricFamily(
            "polybus_data_silence_seconds", "seconds since the last data frame", labels=["conn"]
        )
        pong = GaugeMetricFamily(
            "polybus_pong_latency_seconds", "last PING→PONG time", labels=["conn"]
        )
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
        yield GaugeMetricFamily(
            "polybus_queue_depth", "events waiting for Redis", value=len(f.outbox)
        )
        yield _counter("polybus_redis_batches", "batches written", f.batches)
        yield _counter("polybus_redis_batch_seconds", "time spent writing batches", f.batch_seconds)
        books = GaugeMetricFamily("polybus_books", "books by status", labels=["status"])
        carried = len(f.carried())
        synced = len(f.mirror.synced)
        books.add_metric(["synced"], synced)
        books.add_metric(["not_synced"], max(carried - synced, 0))
        yield books
        yield GaugeMetricFamily(
            "polybus_redis_up", "1 when Redis answers", value=1.0 if f.redis_ok else 0.0
        )
        refused = GaugeMetricFamily(
            "polybus_redis_writes_refused",
            "1 while Redis refuses writes (OOM, READONLY, NOPERM), by reason",
            labels=["reason"],
        )
        if f.redis_refused:
            refused.add_metric([f.redis_refused], 1.0)
        yield refused
        yield _counter("polybus_redis_refusals", "times Redis started refusing writes", f.refusals)
        yield _counter(
            "polybus_events_discarded",
            "events dropped while Redis was lost or refused writes (every book is resynced after)",
            f.outbox.discarded,
        )
        yield from _interest(f)
        yield from _partitions(f)
        if f.discovery is not None:
            yield _counter("polybus_gamma_polls", "Gamma polls that succeeded", f.discovery.polls)
            yield _counter(
                "polybus_gamma_poll_failures",
                "Gamma polls that failed (retried)",
                f.discovery.failures,
            )
        if self.server is not None:
            yield from _endpoint(self.server)


def _partitions(f: Feeder) -> Iterator[Metric]:
    """Redundant feeders (docs/ha.md): what this feeder leads, carries, and its takeovers."""
    r = f.redundancy
    leader = GaugeMetricFamily(
        "polybus_partition_leader",
        "1 for each partition this feeder leads (writes), with its fence",
        labels=["partition", "fence"],
    )
    for p, fence in sorted(r.gate.open.items()):
        leader.add_metric([str(p), str(fence)], 1.0)
    yield leader
    yield GaugeMetricFamily(
        "polybus_partitions_carried",
        "partitions subscribed here (led or hot standby)",
        value=len(r.leadership.carrying),
    )
    yield GaugeMetricFamily(
        "polybus_partitions_warm",
        "carried partitions with every book synced here",
        value=len(r.warm()),
    )
    yield _by_label(
        "polybus_takeover",
        "takeovers and their outcome (matched: the old "
        "leader's last event found; replayed: events it had not written)",
        "kind",
        dict(r.counts),
        "",
    )
    yield GaugeMetricFamily(
        "polybus_standby_held",
        "events held for partitions this feeder stands by for",
        value=len(r.gate.buffer),
    )
    yield _counter(
        "polybus_unfenced_dropped",
        "entries of partitions this feeder no longer leads, not written",
        f.publisher.unfenced,
    )


def _interest(f: Feeder) -> Iterator[Metric]:
    stats = f.interest
    yield GaugeMetricFamily(
        "polybus_interest_tokens", "tokens carried because of a lease", value=stats.leased
    )
    ignored = GaugeMetricFamily(
        "polybus_interest_ignored",
        "live leases ignored at the last "
        "poll: over POLYBUS_MAX_LEASED_TOKENS, or past the read limit",
        labels=["reason"],
    )
    ignored.add_metric(["over_limit"], stats.over_limit)
    ignored.add_metric(["unread"], stats.truncated)
    yield ignored
    yield _counter(
        "polybus_interest_clamped", "leases lowered to POLYBUS_MAX_LEASE_S", stats.clamped
    )
    yield _counter(
        "polybus_interest_invalid_removed",
        "non-token members removed from the interest zset",
        stats.invalid_removed,
    )


def _endpoint(server: BoundedServer) -> Iterator[Metric]:
    yield GaugeMetricFamily(
        "polybus_metrics_connections", "open connections to this endpoint", value=len(server.open)
    )
    closed = CounterMetricFamily(
        "polybus_metrics_connections_closed",
        "connections this endpoint closed on its own",
        labels=["reason"],
    )
    closed.add_metric(["evicted"], server.evicted)
    closed.add_metric(["timeout"], server.timed_out)
    yield closed


def _counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, value=value)


def _by_label(name: str, doc: str, label: str, counts: dict[str, int], prefix: str) -> Metric:
    family = CounterMetricFamily(name, doc, labels=[label])
    for key, value in sorted(counts.items()):
        if key.startswith(prefix):
            family.add_metric([key[len(prefix) :]], value)
    return family


class BoundedServer(web.Server):
    """aiohttp's low-level server with a connection cap and a deadline on every connection.

    aiohttp has no header-read timeout as such (its `keepalive_timeout` closes an idle
    connection, and only newer versions start that timer before the first request), so the
    bound is enforced here, where aiohttp reports each accepted connection:
    - every connection lives at most `timeout` seconds from accept, and every answer says
      `Connection: close`, so that deadline bounds reading the headers, a slow body, and a
      client that never reads its answer alike;
    - at most `max_connections` are open at once: a new one evicts the oldest, so a flood of
      half-sent requests holds at most that many descriptors and cannot shut a real scraper
      out for longer than it takes to open `max_connections` more. (`MetricsServer` accepts
      one socket at a time for this: asyncio's own listener accepts up to `backlog` sockets
      per wake-up before aiohttp sees any, which under load let the count overshoot.)
    Refusing the newest instead would let an attacker who holds the slots keep /healthz dark.
    """

    def __init__(
        self, handler: Any, *, max_connections: int, timeout: float, **kwargs: Any
    ) -> None:
        super().__init__(
            handler,
            keepalive_timeout=timeout,
            access_log=None,
            max_line_size=4096,
            max_field_size=4096,
            max_headers=32,
            **kwargs,
        )
        self.max_connections = max_connections
        self.timeout = timeout
        self.open: OrderedDict[RequestHandler, asyncio.TimerHandle] = OrderedDict()
        """Connections by age, each with its deadline."""
        self.evicted = 0
        self.timed_out = 0

    def connection_made(self, handler: RequestHandler, transport: asyncio.Transport) -> None:
        super().connection_made(handler, transport)
        while len(self.open) >= self.max_connections:
            oldest, deadline = self.open.popitem(last=False)
            deadline.cancel()
            self.evicted += 1
            _drop(oldest)
        loop = asyncio.get_running_loop()
        self.open[handler] = loop.call_later(self.timeout, self._expire, handler)

    def connection_lost(self, handler: RequestHandler, exc: BaseException | None = None) -> None:
        deadline = self.open.pop(handler, None)
        if deadline is not None:
            deadline.cancel()
        super().connection_lost(handler, exc)

    def _expire(self, handler: RequestHandler) -> None:
        if self.open.pop(handler, None) is not None:
            self.timed_out += 1
            _drop(handler)

    def close_all(self) -> None:
        """Drop every open connection (at shutdown)."""
        while self.open:
            handler, deadline = self.open.popitem()
            deadline.cancel()
            _drop(handler)


def _drop(handler: RequestHandler) -> None:
    """Close a connection now: its descriptor is free at once, whatever its state."""
    transport = handler.transport
    handler.force_close()
    if transport is not None:
        transport.abort()


class MetricsServer:
    """`/metrics` (Prometheus text) and `/healthz` (200 ok / 503 degraded) for one feeder."""

    def __init__(
        self,
        feeder: Feeder,
        *,
        max_connections: int = MAX_CONNECTIONS,
        timeout: float = CONNECTION_TIMEOUT,
    ) -> None:
        self.feeder = feeder
        self.limits = {"max_connections": max_connections, "timeout": timeout}
        self.web: BoundedServer | None = None
        self.registry = CollectorRegistry(auto_describe=False)
        self.accept_errors = 0
        self._sock: socket.socket | None = None
        self._accepting: asyncio.Task[None] | None = None

    async def start(self, host: str, port: int) -> None:
        """Listen on host:port (port 0 picks a free one, see `port`)."""
        self.web = BoundedServer(self._handle, **self.limits)  # type: ignore[arg-type]
        self.registry.register(FeederCollector(self.feeder, self.web))
        loop = asyncio.get_running_loop()
        family, kind, proto, _, address = (
            await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        )[0]
        sock = socket.socket(family, kind, proto)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(address)
            sock.listen(BACKLOG)
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        self._sock = sock
        self._accepting = asyncio.create_task(self._accept(sock, self.web))

    async def _accept(self, sock: socket.socket, server: BoundedServer) -> None:
        """Accept one connection at a time and hand it to aiohttp, which evicts at the cap
        before the next accept: never more than `max_connections` (+1) descriptors."""
        loop = asyncio.get_running_loop()
        try:
            while True:
                try:
                    conn, _ = await loop.sock_accept(sock)
                except OSError:  # EMFILE (descriptors taken elsewhere): wait, go on
                    self.accept_errors += 1
                    await asyncio.sleep(0.05)
                    continue
                try:
                    await loop.connect_accepted_socket(server, conn)
                except OSError:  # the client left before its transport was set up
                    conn.close()
        finally:
            sock.close()

    @property
    def port(self) -> int:
        assert self._sock is not None
        return int(self._sock.getsockname()[1])

    def close(self) -> None:
        """Stop listening and drop every open connection."""
        if self._accepting is not None:
            self._accepting.cancel()  # its `finally` closes the listening socket
        if self.web is not None:
            self.web.close_all()

    async def aclose(self) -> None:
        """close(), then wait until the listening socket is closed."""
        self.close()
        if self._accepting is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._accepting

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        if request.path == "/metrics":
            response = web.Response(
                body=generate_latest(self.registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
            )
        elif request.path == "/healthz":
            state = self.feeder.health()["state"]
            response = web.Response(status=200 if state == "ok" else 503, text=f"{state}\n")
        else:
            response = web.Response(status=404, text="not found\n")
        response.force_close()  # one request per connection: the deadline bounds it all
        return response


async def serve_metrics(feeder: Feeder, host: str, port: int, **limits: Any) -> MetricsServer:
    """Start serving `/metrics` and `/healthz` for this feeder (see `MetricsServer`)."""
    server = MetricsServer(feeder, **limits)
    await server.start(host, port)
    return server
