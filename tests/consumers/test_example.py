"""The example strategy runs against a live bus: it quotes strictly inside real spreads,
pulls every quote when polybus stops vouching, and quotes again after."""

from __future__ import annotations

import asyncio
import importlib.util
from decimal import Decimal
from pathlib import Path

from polybus.consumers import MarketFeed
from tests.e2e.harness import rig
from tests.support import wait_for


EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "quote_inside.py"


async def test_example_quotes_inside_the_spread_and_pulls_on_disconnect(
    redis_server, monkeypatch
) -> None:
    """Quotes lie strictly inside the book when made; a drop pulls them; quoting resumes."""
    spec = importlib.util.spec_from_file_location("quote_inside", EXAMPLE)
    assert spec is not None and spec.loader is not None
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    async with rig(redis_server) as r:
        seen: list[tuple[Decimal, Decimal]] = []
        original = example.QuoteInside.requote

        def spy(self, token: str) -> None:
            before = self.quotes.get(token)
            original(self, token)
            if token in self.quotes and self.quotes[token] != before:
                book = self.feed.get_order_book(token)
                bid, ask = self.quotes[token]
                assert book.status == "synced" and self.live
                assert Decimal(book.bids[0].price_str) < bid < ask < Decimal(book.asks[0].price_str)
                seen.append((bid, ask))

        monkeypatch.setattr(example.QuoteInside, "requote", spy)
        strategy = example.QuoteInside(MarketFeed(redis_server.url))
        stop = asyncio.Event()
        task = asyncio.create_task(strategy.run(r.tokens, stop))
        await wait_for(lambda: strategy.placed >= 10, 10, "ten quotes")
        r.sim.drop_all()
        await wait_for(lambda: strategy.pulled == 1, 10, "quotes pulled")
        placed = strategy.placed
        await wait_for(lambda: strategy.live and strategy.placed > placed + 5, 10, "quoting again")
        stop.set()
        await task
        assert strategy.quotes == {}, "disconnect pulls every quote"
        assert len(seen) == strategy.placed
