"""Exact units: prices in pips (1/10000), sizes in cents (1/100 share), and their spellings.

The engine never touches floats: every price and size is an integer, and the exchange's
decimal strings are produced here, canonical ("0.48", "1200", "310.5") unless a caller asks
for the padded spellings that appear live ("0.480").
"""

from __future__ import annotations


__all__ = [
    "COARSE",
    "FINE",
    "ODD_TICKS",
    "ONE",
    "fmt_price",
    "fmt_size",
    "on_grid",
    "padded_price",
    "parse_price",
    "tick_str",
]

ONE = 10_000
"""1.0 in pips."""
COARSE, FINE = 100, 10
"""Tick sizes 0.01 and 0.001 in pips."""
ODD_TICKS = (50, 25)
"""Tick sizes 0.005 and 0.0025 in pips: live since 2026-07, and not powers of ten."""


def _spell(units: int, scale: int, digits: int) -> str:
    whole, frac = divmod(units, scale)
    if not frac:
        return str(whole)
    return f"{whole}.{frac:0{digits}d}".rstrip("0")


_PRICES = tuple(_spell(p, ONE, 4) for p in range(ONE + 1))
"""Every price on the pip grid, spelled once (formatting is the hot path of rendering)."""


def fmt_price(pips: int) -> str:
    """Canonical decimal string of a price in pips (4800 → "0.48", 10 → "0.001")."""
    return _PRICES[pips] if 0 <= pips <= ONE else _spell(pips, ONE, 4)


def fmt_size(cents: int) -> str:
    """Canonical decimal string of a size in 1/100 shares (31050 → "310.5", 120000 → "1200")."""
    whole, frac = divmod(cents, 100)
    if not frac:
        return str(whole)
    return f"{whole}.{frac:02d}".rstrip("0")


def padded_price(pips: int) -> str:
    """A live-style spelling with at least three decimals ("0.48" → "0.480", "1" → "1.000")."""
    text = fmt_price(pips)
    whole, _, frac = text.partition(".")
    return f"{whole}.{frac.ljust(3, '0')}"


def tick_str(tick: int) -> str:
    """The tick size as the exchange spells it ("0.01")."""
    return fmt_price(tick)


def parse_price(text: str) -> int:
    """Pips of an exact decimal price string ("0.0025" → 25); ValueError off the pip grid."""
    whole, _, frac = text.partition(".")
    if not whole.isdigit() or (frac and not frac.isdigit()) or len(frac.rstrip("0")) > 4:
        raise ValueError(f"not a price in pips: {text!r}")
    return int(whole) * ONE + int(frac.rstrip("0").ljust(4, "0") or 0)


def on_grid(pips: int, tick: int) -> bool:
    """Whether a price lies on the tick grid, exactly (integer pips, no float rounding)."""
    return pips % tick == 0
