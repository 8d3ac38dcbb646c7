"""Market discovery from Gamma `/markets`: decode, select the most active. Pure.

Gamma's quirks (PROTOCOL.md §4): `clobTokenIds` and `outcomes` are JSON arrays *inside a
string* on `/markets` but real arrays elsewhere; Protocol V2 markets (`version: "v2"`) carry
their outcome ids in `positionIds` instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from wire.errors import DecodeError, InvalidToken
from wire.keys import validate_token


__all__ = ["GammaMarket", "parse_markets", "select_top"]


@dataclass(frozen=True, slots=True)
class GammaMarket:
    """One tradable market as discovery needs it."""

    id: str
    condition_id: str
    question: str
    tokens: tuple[str, ...]
    outcomes: tuple[str, ...]
    volume24hr: float
    active: bool


def _array(value: Any, name: str) -> list[Any]:
    """A JSON array given either as a list or as a string holding one."""
    if value is None or value == "":
        return []
    if isinstance(value, str):
        try:
            value = orjson.loads(value)
        except orjson.JSONDecodeError as exc:
            raise DecodeError(f"{name} is not a JSON array: {value!r:.60}") from exc
    if not isinstance(value, list):
        raise DecodeError(f"{name} must be an array")
    return value


def _market(raw: dict[str, Any]) -> GammaMarket:
    version = str(raw.get("version") or "v1").lower()
    ids = _array(raw.get("positionIds") if version == "v2" else raw.get("clobTokenIds"),
                 "positionIds" if version == "v2" else "clobTokenIds")
    tokens = tuple(validate_token(str(t)) for t in ids)
    tradable = (bool(raw.get("active", True)) and not raw.get("closed", False)
                and raw.get("enableOrderBook", True) is not False)
    try:
        volume = float(raw.get("volume24hr") or 0.0)
    except (TypeError, ValueError):
        volume = 0.0
    return GammaMarket(
        id=str(raw.get("id", "")), condition_id=str(raw.get("conditionId", "")),
        question=str(raw.get("question", "")), tokens=tokens,
        outcomes=tuple(str(o) for o in _array(raw.get("outcomes"), "outcomes")),
        volume24hr=volume, active=tradable,
    )


def parse_markets(payload: Any) -> tuple[list[GammaMarket], list[str]]:
    """Markets from a `/markets` response, and one problem string per market skipped."""
    if not isinstance(payload, list):
        raise DecodeError("Gamma /markets must answer a JSON array")
    markets, problems = [], []
    for raw in payload:
        if not isinstance(raw, dict):
            problems.append("not an object")
            continue
        try:
            markets.append(_market(raw))
        except (DecodeError, InvalidToken) as exc:
            problems.append(f"market {raw.get('id', '?')}: {exc}")
    return markets, problems


def select_top(markets: list[GammaMarket], n: int, min_volume: float = 0.0) -> list[GammaMarket]:
    """The n most active tradable markets with at least `min_volume` 24h volume."""
    eligible = [m for m in markets if m.active and m.tokens and m.volume24hr >= min_volume]
    eligible.sort(key=lambda m: (-m.volume24hr, m.id))
    return eligible[:n]
