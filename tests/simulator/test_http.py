"""The REST and Gamma twins and the /_sim controls, checked against the engine's truth."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from decimal import Decimal

import pytest

from polybus.simulator import SimConfig, Simulator
from tests.simulator.client import canon, http


NO_BOOK = {"error": "No orderbook exists for the requested token id"}


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    """A paused simulator (so REST answers can be compared with the truth)."""
    simulator = Simulator(SimConfig(markets=5, seed=4, rate=100.0, v2_fraction=0.4))
    await simulator.start()
    await simulator.pause()
    simulator.engine.step(800)
    try:
        yield simulator
    finally:
        await simulator.stop()


def levels(book: dict[str, list[dict[str, str]]], side: str) -> tuple[tuple[str, str], ...]:
    return tuple((canon(lv["price"]), canon(lv["size"])) for lv in book[side])


async def test_book_matches_truth_worst_first(sim: Simulator) -> None:
    """GET /book is the true book, bids ascending and asks descending, with REST-only fields."""
    for token in sim.engine.tokens():
        status, book = await http(f"{sim.http_url}/book?token_id={token}")
        assert status == 200 and book["asset_id"] == token
        bids, asks = sim.engine.true_book(token)
        assert levels(book, "bids") == bids[::-1] and levels(book, "asks") == asks[::-1]
        assert book["min_order_size"] and book["tick_size"] in ("0.01", "0.001")
        assert book["neg_risk"] is False and isinstance(book["last_trade_price"], str)
        assert len(book["hash"]) == 40 and book["timestamp"].isdigit()


async def test_unknown_book_is_404(sim: Simulator) -> None:
    """An unknown token answers 404 with live's error body."""
    assert await http(f"{sim.http_url}/book?token_id=123") == (404, NO_BOOK)


async def test_books_omit_unknown_and_cap_at_500(sim: Simulator) -> None:
    """POST /books returns known books in order, omits unknown ids, refuses over 500 items."""
    tokens = sim.engine.tokens()[:3]
    body = [{"token_id": tokens[0]}, {"token_id": "1"}, {"token_id": tokens[2]}]
    status, books = await http(f"{sim.http_url}/books", body)
    assert status == 200 and [b["asset_id"] for b in books] == [tokens[0], tokens[2]]
    status, _ = await http(f"{sim.http_url}/books", [{"token_id": tokens[0]}] * 501)
    assert status == 400


async def test_price_midpoint_tick_size(sim: Simulator) -> None:
    """/price (BUY → best bid), /midpoint (`mid`) and /tick-size (a number) agree with truth."""
    token = sim.engine.tokens()[1]
    bids, asks = sim.engine.true_book(token)
    url = sim.http_url
    assert await http(f"{url}/price?token_id={token}&side=BUY") == (200, {"price": bids[0][0]})
    assert await http(f"{url}/price?token_id={token}&side=SELL") == (200, {"price": asks[0][0]})
    status, mid = await http(f"{url}/midpoint?token_id={token}")
    assert status == 200 and Decimal(mid["mid"]) == (Decimal(bids[0][0]) + Decimal(asks[0][0])) / 2
    status, tick = await http(f"{url}/tick-size?token_id={token}")
    assert status == 200 and tick["minimum_tick_size"] in (0.01, 0.001)
    status, spread = await http(f"{url}/spread?token_id={token}")
    assert Decimal(spread["spread"]) == Decimal(asks[0][0]) - Decimal(bids[0][0])


async def test_gamma_markets_shape(sim: Simulator) -> None:
    """Gamma /markets: ids and outcomes are JSON strings (v1) or positionIds arrays (v2)."""
    status, markets = await http(f"{sim.http_url}/markets")
    assert status == 200 and len(markets) == 5
    versions = {m["version"] for m in markets}
    assert versions == {"v1", "v2"}
    for raw, market in zip(markets, sim.engine.markets(), strict=True):
        if raw["version"] == "v1":
            assert isinstance(raw["clobTokenIds"], str)
            assert json.loads(raw["clobTokenIds"]) == list(market.tokens)
        else:
            assert raw["positionIds"] == list(market.tokens)
        assert json.loads(raw["outcomes"]) == ["Yes", "No"]
        assert len(json.loads(raw["outcomePrices"])) == 2
        assert isinstance(raw["volume24hr"], float) and raw["conditionId"] == market.condition_id
        for key in (
            "id",
            "question",
            "slug",
            "active",
            "closed",
            "acceptingOrders",
            "enableOrderBook",
            "orderPriceMinTickSize",
            "volumeNum",
            "liquidityNum",
            "bestBid",
            "bestAsk",
            "lastTradePrice",
        ):
            assert key in raw
    assert len({m["volume24hr"] for m in markets}) == 5


async def test_gamma_closed_filter_and_pagination(sim: Simulator) -> None:
    """closed defaults to false; closed=true lists resolved markets; limit/offset page."""
    gone = sim.engine.markets()[1]
    sim.engine.resolve(gone)
    status, open_ = await http(f"{sim.http_url}/markets")
    assert status == 200 and gone.id not in {m["id"] for m in open_} and len(open_) == 4
    _, closed = await http(f"{sim.http_url}/markets?closed=true")
    assert [m["id"] for m in closed] == [gone.id] and closed[0]["closed"] is True
    _, page1 = await http(f"{sim.http_url}/markets?limit=3&offset=0")
    _, page2 = await http(f"{sim.http_url}/markets?limit=3&offset=3")
    assert [m["id"] for m in page1 + page2] == [m["id"] for m in open_]
    _, ranked = await http(f"{sim.http_url}/markets?order=volume24hr&ascending=false")
    volumes = [m["volume24hr"] for m in ranked]
    assert volumes == sorted(volumes, reverse=True)
    assert (await http(f"{sim.http_url}/book?token_id={gone.yes}"))[0] == 404


async def test_control_endpoints(sim: Simulator) -> None:
    """/_sim controls: tokens, truth, resume/pause, stall and drop."""
    url = sim.http_url
    status, tokens = await http(f"{url}/_sim/tokens")
    assert status == 200 and tokens == sim.engine.tokens()
    status, truth = await http(f"{url}/_sim/truth?token_id={tokens[0]}")
    bids, asks = sim.engine.true_book(tokens[0])
    assert truth == {"bids": [list(lv) for lv in bids], "asks": [list(lv) for lv in asks]}
    assert (await http(f"{url}/_sim/resume", {}))[0] == 200 and not sim.paused
    assert (await http(f"{url}/_sim/pause", {}))[0] == 200 and sim.paused
    assert (await http(f"{url}/_sim/stall?on=1", {}))[0] == 200
    assert (await http(f"{url}/_sim/drop", {}))[1]["dropped"] == 0
    assert (await http(f"{url}/nothing"))[0] == 404


async def raw_exchange(url: str, data: bytes, answers: int = 1) -> list[tuple[int, bytes]]:
    """Send raw bytes on one connection and read `answers` HTTP responses back."""
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(data)
    out = []
    try:
        for _ in range(answers):
            head = (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)).decode()
            length = next(
                int(line.split(":")[1])
                for line in head.split("\r\n")
                if line.lower().startswith("content-length")
            )
            body = await asyncio.wait_for(reader.readexactly(length), 5)
            out.append((int(head.split()[1]), body))
    finally:
        writer.close()
    return out


async def test_keep_alive_wrong_method_and_bad_bodies(sim: Simulator) -> None:
    """Two requests share one connection; a wrong method is 405, a bad or oversized body 400,
    each with the twins' JSON error body."""
    token = sim.engine.tokens()[0]
    two = (
        f"GET /book?token_id={token} HTTP/1.1\r\nHost: x\r\n\r\n"
        "GET /book?token_id=1 HTTP/1.1\r\nHost: x\r\n\r\n"
    ).encode()
    (first, book), (second, missing) = await raw_exchange(sim.http_url, two, answers=2)
    assert first == 200 and json.loads(book)["asset_id"] == token
    assert (second, json.loads(missing)) == (404, NO_BOOK)
    assert await http(f"{sim.http_url}/books") == (405, {"error": "method not allowed"})
    bad = b"POST /books HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n[{oop"
    [(status, body)] = await raw_exchange(sim.http_url, bad)
    assert (status, json.loads(body)) == (400, {"error": "Invalid payload"})
    huge = f"POST /books HTTP/1.1\r\nHost: x\r\nContent-Length: {5 * 2**20}\r\n\r\n".encode()
    [(status, body)] = await raw_exchange(sim.http_url, huge)
    assert (status, json.loads(body)) == (400, {"error": "bad request"})
