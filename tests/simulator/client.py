"""An independent reference client for simulator tests: reads frames, applies them to books.

Deliberately written from PROTOCOL.md, not from the simulator's code: books are replaced by
`book`, levels set by `price_change` (new and legacy shapes, size "0" removes), arrays and
non-JSON text handled, unknown event types ignored, the text replies `PONG` and
`NO NEW ASSETS` counted and filtered. A trade's post-trade books simply replace the books,
whatever comes around them; each parsed object's arrival time is kept (`arrived`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import urllib.error
import urllib.request
from decimal import Decimal
from typing import Any

import orjson
from websockets.asyncio.client import ClientConnection, connect

from tests.support import wait_for


def canon(text: str) -> str:
    """Canonical decimal spelling ("0.480" → "0.48", "1200.0" → "1200")."""
    value = Decimal(text).normalize()
    return format(value, "f")


class RefBooks:
    """Books rebuilt only from what came over the wire."""

    def __init__(self) -> None:
        self.books: dict[str, dict[str, dict[str, str]]] = {}

    def apply(self, obj: Any) -> None:
        kind = obj.get("event_type") if isinstance(obj, dict) else None
        if kind == "book":
            self.books[obj["asset_id"]] = {
                "bids": {canon(lv["price"]): lv["size"] for lv in obj["bids"]},
                "asks": {canon(lv["price"]): lv["size"] for lv in obj["asks"]},
            }
        elif kind == "price_change":
            if "price_changes" in obj:
                changes = obj["price_changes"]
            else:
                changes = [{**c, "asset_id": obj["asset_id"]} for c in obj["changes"]]
            for c in changes:
                book = self.books.get(c["asset_id"])
                if book is None:
                    continue  # the other leg of a market we do not hold
                side = book["bids" if c["side"] == "BUY" else "asks"]
                if Decimal(c["size"]) == 0:
                    side.pop(canon(c["price"]), None)
                else:
                    side[canon(c["price"])] = c["size"]

    def levels(self, token: str) -> tuple[tuple[tuple[str, str], ...], ...]:
        """(bids, asks) best first, canonical: comparable with `engine.true_book`."""
        book = self.books.get(token, {"bids": {}, "asks": {}})
        bids = sorted(book["bids"].items(), key=lambda lv: Decimal(lv[0]), reverse=True)
        asks = sorted(book["asks"].items(), key=lambda lv: Decimal(lv[0]))
        return (tuple((p, canon(s)) for p, s in bids), tuple((p, canon(s)) for p, s in asks))


class Client:
    """A market-channel client that records every frame and keeps reference books."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.texts: list[str] = []
        self.objects: list[dict[str, Any]] = []
        self.arrived: list[float] = []
        """monotonic arrival time of each of `objects`"""
        self.refs = RefBooks()
        self.pongs = 0
        self.no_new_assets = 0
        self.closed: BaseException | None = None
        self._task = asyncio.create_task(self._read())

    @classmethod
    async def open(cls, url: str, tokens: list[str], **fields: Any) -> Client:
        ws = await connect(url, max_size=2**24, compression=None, ping_interval=None)
        client = cls(ws)
        await ws.send(json.dumps({"type": "market", "assets_ids": tokens, **fields}))
        return client

    async def _read(self) -> None:
        try:
            async for text in self.ws:
                assert isinstance(text, str)
                self.texts.append(text)
                if text == "PONG":
                    self.pongs += 1
                    continue
                if text == "NO NEW ASSETS":
                    self.no_new_assets += 1
                    continue
                now = time.monotonic()
                with contextlib.suppress(orjson.JSONDecodeError):
                    parsed = orjson.loads(text)
                    for obj in parsed if isinstance(parsed, list) else [parsed]:
                        self.objects.append(obj)
                        self.arrived.append(now)
                        self.refs.apply(obj)
        except Exception as exc:  # recorded for the test to inspect
            self.closed = exc
        else:
            self.closed = ConnectionError("closed")

    async def barrier(self, timeout: float = 5.0) -> None:
        """PING and wait for its PONG: every frame sent before it has then arrived."""
        want = self.pongs + 1
        await self.ws.send("PING")
        await wait_for(lambda: self.pongs >= want, timeout, "PONG")

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [o for o in self.objects if isinstance(o, dict) and o.get("event_type") == kind]

    async def close(self) -> None:
        await self.ws.close()
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


def _get(url: str, body: bytes | None) -> tuple[int, Any]:
    request = urllib.request.Request(url, data=body, method="POST" if body is not None else "GET")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


async def http(url: str, body: Any = None) -> tuple[int, Any]:
    """(status, JSON) of a GET, or a POST when `body` is given."""
    data = None if body is None else json.dumps(body).encode()
    return await asyncio.to_thread(_get, url, data)
