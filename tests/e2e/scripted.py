"""A scripted exchange for protocol tests: a real WebSocket server (and a REST `/books`) that
sends exactly the frames a test hands it and logs everything the client sends.

Unlike the simulator it has no market engine: a test writes the frames (hand-written, in the
live shapes of PROTOCOL.md §9) and decides what each subscribe is answered with, so each test
pins one behaviour of the feeder against one exchange behaviour.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed


__all__ = ["Scripted", "book", "change", "pc_frame"]


def book(
    token: str,
    ts: str,
    bids: list[tuple[str, str]],
    asks: list[tuple[str, str]],
    digest: str = "0" * 40,
    *,
    initial: bool = True,
    market: str = "0x" + "a" * 64,
) -> dict[str, Any]:
    """A live-shaped `book`: bids ascending, asks descending (worst first), event_type last."""
    msg: dict[str, Any] = {
        "market": market,
        "asset_id": token,
        "timestamp": ts,
        "hash": digest,
        "bids": [{"price": p, "size": s} for p, s in sorted(bids, key=lambda x: float(x[0]))],
        "asks": [{"price": p, "size": s} for p, s in sorted(asks, key=lambda x: -float(x[0]))],
    }
    if initial:
        msg["tick_size"] = "0.01"
    msg["event_type"] = "book"
    if initial:
        msg["last_trade_price"] = ""
    return msg


def change(
    token: str, side: str, price: str, size: str, bid: str, ask: str, digest: str = "1" * 40
) -> dict[str, str]:
    """One element of `price_changes` (side BUY/SELL; bid/ask = the stated top)."""
    return {
        "asset_id": token,
        "price": price,
        "size": size,
        "side": side,
        "hash": digest,
        "best_bid": bid,
        "best_ask": ask,
    }


def pc_frame(ts: str, *changes: dict[str, str], market: str = "0x" + "a" * 64) -> dict[str, Any]:
    return {
        "market": market,
        "price_changes": list(changes),
        "timestamp": ts,
        "event_type": "price_change",
    }


Answer = Callable[["Scripted", "Client", dict[str, Any]], list[bytes | str]]


@dataclass(eq=False)
class Client:
    """One connection to the scripted exchange."""

    ws: ServerConnection
    received: list[str] = field(default_factory=list)
    subscribed: set[str] = field(default_factory=set)
    initialized: bool = False

    async def send(self, *frames: bytes | str | dict[str, Any] | list[Any]) -> None:
        for frame in frames:
            if isinstance(frame, dict | list):
                frame = orjson.dumps(frame)
            await self.ws.send(frame.decode() if isinstance(frame, bytes) else frame)


class Scripted:
    """The server; `on_subscribe(sim, client, msg)` returns the frames answering a subscribe."""

    def __init__(self) -> None:
        self.clients: list[Client] = []
        self.on_subscribe: Answer = lambda s, c, m: []
        self.close_after_accept = 0
        """Close this many connections right after the handshake."""
        self.pinged_early = 0
        """PINGs received before the initial subscription (closed with 1008, as live)."""
        self.rest_books: dict[str, dict[str, Any]] = {}
        """token -> the object `POST /books` answers with (absent: omitted, as live)."""
        self.rest_requests: list[list[str]] = []
        self.ws_url = ""
        self.rest_url = ""
        self._ws: Server | None = None
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        self._ws = await serve(self._handle, "127.0.0.1", 0, compression=None, ping_interval=None)
        self.ws_url = f"ws://127.0.0.1:{self._ws.sockets[0].getsockname()[1]}/ws/market"
        app = web.Application()
        app.router.add_post("/books", self._books)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.rest_url = f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        if self._ws is not None:
            self._ws.close()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._ws.wait_closed(), 2)
        if self._runner is not None:
            await self._runner.cleanup()

    def ops(self, operation: str) -> list[list[str]]:
        """The token lists of every `operation` frame received, all clients."""
        out = []
        for client in self.clients:
            for text in client.received:
                if text.startswith("{"):
                    msg = orjson.loads(text)
                    if msg.get("operation") == operation:
                        out.append(msg["assets_ids"])
        return out

    async def _books(self, request: web.Request) -> web.Response:
        body = await request.json()
        tokens = [str(item.get("token_id", "")) for item in body]
        self.rest_requests.append(tokens)
        books = [self.rest_books[t] for t in tokens if t in self.rest_books]
        return web.json_response(books)

    async def _handle(self, ws: ServerConnection) -> None:
        if self.close_after_accept > 0:
            self.close_after_accept -= 1
            await ws.close()
            return
        client = Client(ws)
        self.clients.append(client)
        try:
            async for message in ws:
                text = message if isinstance(message, str) else message.decode()
                client.received.append(text)
                await self._on_message(client, text)
        except ConnectionClosed:
            pass

    async def _on_message(self, client: Client, text: str) -> None:
        if text == "PING":
            if not client.initialized:  # live: "invalid subscription payload"
                self.pinged_early += 1
                await client.ws.close(1008, "invalid subscription payload")
                return
            await client.ws.send("PONG")
            return
        msg = orjson.loads(text)
        ids = [str(t) for t in msg.get("assets_ids", [])]
        op = msg.get("operation")
        if op is None:
            client.initialized = True
        elif op == "unsubscribe":
            client.subscribed.difference_update(ids)
            return
        elif op == "subscribe" and not set(ids) - client.subscribed:
            await client.ws.send("NO NEW ASSETS")
            return
        client.subscribed.update(ids)
        await client.send(*self.on_subscribe(self, client, msg))
