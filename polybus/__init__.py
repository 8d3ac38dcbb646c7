"""polybus: one Polymarket market-data feed on Redis, many strategies reading it.

    from polybus import MarketFeed

The seed's callback API (`MarketFeed`, alias `MarketWebSocket`, and its models) is exported
here; everything else lives in subpackages — `polybus.wire` (the contract), `polybus.feeder`,
`polybus.consumers`, `polybus.simulator`, `polybus.replay` — and in the `polybus` console
script (`polybus.cli`). README.md has the map of what may import what.
"""

from __future__ import annotations

from polybus.consumers import (
    ConnectionState,
    MarketData,
    MarketFeed,
    MarketWebSocket,
    OrderBook,
    PriceLevel,
)
from polybus.wire.version import VERSION


__all__ = [
    "ConnectionState",
    "MarketData",
    "MarketFeed",
    "MarketWebSocket",
    "OrderBook",
    "PriceLevel",
    "__version__",
]

__version__ = VERSION
