"""The simulator's HTTP side: one small HTTP/1.1 server for the REST twin, the Gamma twin and
the `/_sim/*` controls a test in another process can use.

websockets' HTTP parser takes no request bodies, so this is a minimal asyncio server: GET and
POST with Content-Length, keep-alive unless the client says `Connection: close`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlsplit

import orjson
import structlog

from simulator import gamma, rest
from simulator.rest import Reply


if TYPE_CHECKING:
    from simulator.server import Simulator

__all__ = ["HttpServer"]

log = structlog.get_logger()

Handler = Callable[["Simulator", dict[str, str], Any], Awaitable[Reply]]
MAX_BODY = 4 * 2**20


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
    return 200, {**vars(sim.stats), "connections": len(sim.connections),
                 "steps": sim.engine.steps, "paused": sim.paused}


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
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self, host: str, port: int) -> asyncio.Server:
        self._server = await asyncio.start_server(self._serve, host, port)
        return self._server

    async def stop(self) -> None:
        if self._server is None:
            return
        self._server.close()
        for writer in list(self._writers):  # idle keep-alive connections would linger
            writer.close()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._server.wait_closed(), 2)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            while await self._one(reader, writer):
                pass
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()

    async def _one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """Answer one request; False when the connection should close."""
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        parts = head[0].split()
        headers = {}
        for line in head[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        try:
            length = int(headers.get("content-length", "0"))
        except ValueError:
            length = -1
        if len(parts) != 3 or not 0 <= length <= MAX_BODY:
            await _respond(writer, 400, {"error": "bad request"}, keep=False)
            return False
        body = await reader.readexactly(length) if length else b""
        status, payload = await self._dispatch(parts[0].upper(), parts[1], body)
        keep = parts[2] == "HTTP/1.1" and headers.get("connection", "").lower() != "close"
        await _respond(writer, status, payload, keep)
        return keep

    async def _dispatch(self, method: str, target: str, body: bytes) -> Reply:
        self.sim.stats.http_requests += 1
        url = urlsplit(target)
        handler = ROUTES.get((method, url.path))
        if handler is None:
            known = any(path == url.path for _, path in ROUTES)
            return (405, {"error": "method not allowed"}) if known else (
                404, {"error": "not found"})
        try:
            payload = orjson.loads(body) if body else None
        except orjson.JSONDecodeError:
            return 400, {"error": "Invalid payload"}
        try:
            return await handler(self.sim, dict(parse_qsl(url.query)), payload)
        except (ValueError, KeyError) as exc:
            log.info("simulator.http.bad_request", path=url.path, error=str(exc))
            return 400, {"error": str(exc)}


async def _respond(writer: asyncio.StreamWriter, status: int, payload: Any, keep: bool) -> None:
    data = orjson.dumps(payload)
    head = (f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n"
            f"Connection: {'keep-alive' if keep else 'close'}\r\n\r\n")
    writer.write(head.encode() + data)
    await writer.drain()
