"""A hostile local Gamma: a raw asyncio server that answers each request in one broken way.

Raw on purpose: a real HTTP server library would refuse to send most of these answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections.abc import Callable

import orjson


def _answer(status: str, body: bytes, *extra: str) -> bytes:
    head = [
        f"HTTP/1.1 {status}",
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
        "Connection: close",
        *extra,
    ]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


BROKEN: dict[str, bytes | None] = {
    "truncated": (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
        b'Content-Length: 5000\r\nConnection: close\r\n\r\n[{"id": "1", "quest'
    ),
    "bad_status_line": b"HTTP/1.1 2OO SURE\r\nContent-Length: 2\r\n\r\n[]",
    "not_http": b"\x00\x01garbage that is not HTTP at all\r\n\r\n",
    "broken_chunks": (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nnot a chunk\r\n"
    ),
    "empty_close": b"",
    "reset": None,
    "stall": None,
    "not_json": _answer("200 OK", b"<html>Bad gateway, but 200</html>"),
    "not_utf8": _answer("200 OK", b"\xff\xfe\x00[1]"),
    "wrong_shape": _answer("200 OK", b'{"error": "rate limited", "data": []}'),
    "garbage_items": _answer("200 OK", b'[1, "x", null, {"clobTokenIds": "[oops"}]'),
    "empty_list": _answer("200 OK", b"[]"),
    "http_500": _answer("500 Internal Server Error", b'{"error": "boom"}'),
    "http_503": _answer("503 Service Unavailable", b"down"),
    "http_429": _answer("429 Too Many Requests", b'{"error": "slow down"}', "Retry-After: 1"),
}
"""Mode -> the bytes sent (None: the mode acts instead of answering)."""


class HostileGamma:
    """Serves `script` modes in turn (the last one repeats); "good" answers `good()`."""

    def __init__(self, good: Callable[[], bytes]) -> None:
        self.good = good
        self.script: list[str] = ["good"]
        self.served: list[str] = []
        self.url = ""
        self._server: asyncio.Server | None = None
        self._stalled: list[asyncio.StreamWriter] = []

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    async def stop(self) -> None:
        for writer in self._stalled:
            writer.close()
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), 2)

    def _next(self) -> str:
        return self.script.pop(0) if len(self.script) > 1 else self.script[0]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            await reader.readuntil(b"\r\n\r\n")
            mode = self._next()
            self.served.append(mode)
            if mode == "stall":
                self._stalled.append(writer)  # never answered; closed at stop
                return
            if mode == "reset":  # RST instead of FIN
                sock = writer.get_extra_info("socket")
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                writer.transport.abort()
                return
            data = self.good() if mode == "good" else BROKEN[mode]
            if mode == "good":
                data = _answer("200 OK", data)
            writer.write(data or b"")
            await writer.drain()
        writer.close()


def sim_markets(sim: object) -> Callable[[], bytes]:
    """The simulator's open markets as Gamma would list them."""
    from polybus.simulator.gamma import gamma_market

    def good() -> bytes:
        engine = sim.engine  # type: ignore[attr-defined]
        return orjson.dumps([gamma_market(m) for m in engine.markets() if m.active])

    return good
