"""The example strategy runs against a live bus and quotes inside real spreads."""

from __future__ import annotations

import importlib.util
from decimal import Decimal
from pathlib import Path

from tests.e2e.harness import rig


EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "quote_inside.py"


async def test_example_quotes_strictly_inside_the_spread(redis_server, monkeypatch) -> None:
    """It quotes strictly inside spreads while live, and pulls every quote on disconnect."""
    spec = importlib.util.spec_from_file_location("quote_inside", EXAMPLE)
    assert spec is not None and spec.loader is not None
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    monkeypatch.setenv("REDIS_URL", redis_server.url)
    async with rig(redis_server) as r:
        seen: list[tuple[Decimal, Decimal]] = []
        original = example.QuoteInside.requote

        def spy(self, token: str) -> None:
            original(self, token)
            if token in self.quotes:
                book = self.feed.get_order_book(token)
                bid, ask = self.quotes[token]
                assert book.bids[0].price < bid < ask < book.asks[0].price
                seen.append((bid, ask))

        monkeypatch.setattr(example.QuoteInside, "requote", spy)
        strategy = await example.main(r.tokens, seconds=2.0)
        assert strategy.placed > 0 and len(seen) >= strategy.placed
        assert strategy.quotes == {}, "disconnect pulls every quote"
        assert all(Decimal(0) < b < a < Decimal(1) for b, a in seen)
