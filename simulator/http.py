"""The simulator's HTTP side: one HTTP/1.1 server for the REST twin, the Gamma twin and the
`/_sim/*` controls a test in another process can use.

aiohttp's low-level server does the HTTP (keep-alive unless the client says `Connection:
close`, chunked or sized bodies); routing is the `ROUTES` table, so every answer — including
404/405 and bad bodies — stays the JSON the twins have always given.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

import orjson
import structlog
from aiohttp import web

from polybus.simulator import gamma, rest
from polybus.simulator.rest import Reply


if TYPE_CHECKING:
    from polybus.simulator.server import Simulator

__all__ = ["HttpServer"]

log = structlog.get_logger()

Handler = Callable[["Simulator", dict[str, str], Any], Awaitable[Reply]]
MAX_BODY = 4 * 2**20
IDLE_TIMEOUT = 15.0
"""Seconds an idle keep-alive connection is kept."""


async def _pause(sim: Simulator, q: dict[str, str], body: Any) -> Reply:
    await sim.pause()
    return 200, {"ok": True, "paused": True}


async def _resume(sim: Simulator, q: dict[str, str], body: Any) -> Reply:
    sim.resume()
    return 200, {"ok": True, "paused": False}


async def _drop(sim: Simulator, q: dict[str, str], body: Any) -> Reply:
    count = len(sim.connections)
    sim.drop_all()
    return 200, {"ok": True, "dropped": count}


async def _stall(sim: Simulator, q: dict[str, str], body: Any) -> Reply:
    on = q.get("on", "1") not in ("0", "false")
    sim.set_stall(on)
    return 200, {"ok": True, "stall": on}


async def _reject(sim: Simulator, q: dict[str, str], body: Any) -> Reply:
    sim.reject_handshakes(int(q.get("count", "1")), int(q.get("status", "429")))
    return 200, {"ok": True}


async def _step(sim: Simulator, q: dict[str, str], body: Any) -> Reply:
    sim.engine.step(int(q.get("n", "1")))
    return 200, {"ok": True, "steps": sim.engine.steps}


async def _truth(sim: Simulator, q: dict[str, str], body: Any) -> Reply:
    token = q.get("token_id", "")
    if sim.engine.market(token) is None:
        return 404, rest.NO_BOOK
    bids, asks = sim.engine.true_book(token)
    return 200, {"bids": [list(lv) for lv in bids], "asks": [list(lv) for lv in asks]}


async def _tokens(sim: Simulator, q: dict[str, str], body: Any) -> Reply:
    return 200, sim.engine.tokens()


async def _stats(sim: Simulator, q: dict[str, str], body: Any) -> Reply:
    return 200, {
        **vars(sim.stats),
        "connections": len(sim.connections),
        "steps": sim.engine.steps,
        "paused": sim.paused,
    }


CONTROL: dict[tuple[str, str], Handler] = {
    ("POST", "/_sim/pause"): _pause,
    ("POST", "/_sim/resume"): _resume,
    ("POST", "/_sim/drop"): _drop,
    ("POST", "/_sim/stall"): _stall,
    ("POST", "/_sim/reject"): _reject,
    ("POST", "/_sim/step"): _step,
    ("GET", "/_sim/truth"): _truth,
    ("GET", "/_sim/tokens"): _tokens,
    ("GET", "/_sim/stats"): _stats,
}
ROUTES: dict[tuple[str, str], Handler] = {**rest.ROUTES, **gamma.ROUTES, **CONTROL}


class HttpServer:
    """Serves `ROUTES` for one simulator."""

    def __init__(self, sim: Simulator) -> None:
        self.sim = sim
        self._server: asyncio.Server | None = None
        self._web: web.Server | None = None

    async def start(self, host: str, port: int) -> asyncio.Server:
        """Listen on host:port (0 = a free port); the listener tells which."""
        self._web = web.Server(self._handle, keepalive_timeout=IDLE_TIMEOUT, access_log=None)
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(self._web, host, port)
        return self._server

    async def stop(self) -> None:
        """Stop listening and close every connection, idle keep-alive ones included."""
        if self._server is None or self._web is None:
            return
        self._server.close()
        await self._web.shutdown(1.0)
        await self._server.wait_closed()

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        body = await _read_body(request)
        if body is None:
            return _reply(400, {"error": "bad request"}, close=True)
        status, payload = await self._dispatch(
            request.method, request.rel_url.raw_path, request.query_string, body
        )
        return _reply(status, payload)

    async def _dispatch(self, method: str, path: str, query: str, body: bytes) -> Reply:
        self.sim.stats.http_requests += 1
        handler = ROUTES.get((method, path))
        if handler is None:
            known = any(p == path for _, p in ROUTES)
            return (
                (405, {"error": "method not allowed"}) if known else (404, {"error": "not found"})
            )
        try:
            payload = orjson.loads(body) if body else None
        except orjson.JSONDecodeError:
            return 400, {"error": "Invalid payload"}
        try:
            return await handler(self.sim, dict(parse_qsl(query)), payload)
        except (ValueError, KeyError) as exc:
            log.info("simulator.http.bad_request", path=path, error=str(exc))
            return 400, {"error": str(exc)}


async def _read_body(request: web.BaseRequest) -> bytes | None:
    """The request body, or None when it is larger than MAX_BODY."""
    if (request.content_length or 0) > MAX_BODY:
        return None
    data = bytearray()
    async for chunk in request.content.iter_any():
        data += chunk
        if len(data) > MAX_BODY:
            return None
    return bytes(data)


def _reply(status: int, payload: Any, *, close: bool = False) -> web.Response:
    response = web.Response(
        status=status, body=orjson.dumps(payload), content_type="application/json"
    )
    if close:
        response.force_close()
    return response
