"""Market discovery from Gamma `/markets`: decode, select the most active, pace retries. Pure.

Gamma's quirks (PROTOCOL.md §4): `clobTokenIds` and `outcomes` are JSON arrays *inside a
string* on `/markets` but real arrays elsewhere; Protocol V2 markets (`version: "v2"`) carry
their outcome ids in `positionIds` instead.

Any answer may be broken or hostile, so nothing here raises anything but `DecodeError`.
"""

from __future__ import annotations

import email.utils
import math
import random
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from polybus.wire.errors import DecodeError, InvalidToken
from polybus.wire.keys import validate_token


__all__ = ["GammaMarket", "parse_markets", "parse_retry_after", "retry_delay", "select_top"]


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
    ids = _array(
        raw.get("positionIds") if version == "v2" else raw.get("clobTokenIds"),
        "positionIds" if version == "v2" else "clobTokenIds",
    )
    tokens = tuple(validate_token(str(t)) for t in ids)
    tradable = (
        bool(raw.get("active", True))
        and not raw.get("closed", False)
        and raw.get("enableOrderBook", True) is not False
    )
    try:
        volume = float(raw.get("volume24hr") or 0.0)
    except (TypeError, ValueError, OverflowError):
        volume = 0.0
    if not math.isfinite(volume):  # NaN would make the ranking meaningless
        volume = 0.0
    return GammaMarket(
        id=str(raw.get("id", "")),
        condition_id=str(raw.get("conditionId", "")),
        question=str(raw.get("question", "")),
        tokens=tokens,
        outcomes=tuple(str(o) for o in _array(raw.get("outcomes"), "outcomes")),
        volume24hr=volume,
        active=tradable,
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


def retry_delay(
    attempt: int,
    base: float,
    cap: float,
    rng: random.Random,
    retry_after: float | None = None,
    max_retry_after: float = 600.0,
) -> float:
    """Seconds before poll attempt n+1 after n failures in a row: exponential, capped at
    `cap` (the normal poll interval), jittered to 50–100 %, and never sooner than the server's
    Retry-After (itself capped: a hostile header must not stall discovery for a year)."""
    delay = min(base * 2.0 ** min(max(attempt - 1, 0), 60), cap) * rng.uniform(0.5, 1.0)
    if retry_after is not None:
        delay = max(delay, min(retry_after, max_retry_after))
    return delay


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """A Retry-After header (seconds or an HTTP date) in seconds from now; None if absent or
    unreadable."""
    if not value:
        return None
    text = value.strip()
    if text.isascii() and text.isdigit():
        return float(text)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None
    now = now or datetime.now(when.tzinfo)
    return max(0.0, (when - now).total_seconds())
