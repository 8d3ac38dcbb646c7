"""Canonical decimal strings: the only way numbers travel on the bus (never floats).

`.48`, `0.480` and `0.48` are all `0.48`; `1200.0` is `1200`; `-0` is `0`; `1e-3` is `0.001`.

The grammar is ASCII only — `[+-] digits [. digits] [(e|E) [+-] digits]` — so `1_000`,
Arabic-Indic digits, padded spaces, `NaN` and `inf` (all of which `Decimal()` would take) are
refused. Input and output are both at most `MAX_LEN` characters, and the output's length is
computed from the exponent *before* anything is expanded: `1e999999` is refused, never turned
into a megabyte of zeros. So canonicalising costs O(len(input)) and the cache holds only short
strings. Range rules (what a price or a size may be) are `wire/validate.py`'s.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

from polybus.wire.errors import DecodeError


__all__ = ["MAX_LEN", "canon", "canon_or_empty", "canonical", "dec"]

MAX_LEN = 64
"""Longest number text accepted, and longest canonical text produced."""

_CACHE: dict[str, str] = {}
_CACHE_MAX = 65536
_NUMBER = re.compile(r"([+-]?)([0-9]*)(?:\.([0-9]*))?(?:[eE]([+-]?[0-9]+))?")


def _show(text: object) -> str:
    """A short, safe rendering of bad input for an error message (never a deep repr)."""
    return repr(text[:40]) if isinstance(text, str) else type(text).__name__


def _expand(negative: bool, digits: str, exp: int) -> str:
    """`digits × 10^exp` as plain text; `digits` has no leading or trailing zeros."""
    if exp >= 0:
        size = len(digits) + exp
    else:
        size = max(len(digits) + exp, 1) + 1 - exp
    if size + negative > MAX_LEN:  # decided before expanding: no megabyte strings
        raise DecodeError(f"number too long when written out: {size} digits")
    if exp >= 0:
        out = digits + "0" * exp
    elif len(digits) > -exp:
        out = f"{digits[:exp]}.{digits[exp:]}"
    else:
        out = "0." + "0" * (-exp - len(digits)) + digits
    return "-" + out if negative else out


def _slow(text: str) -> str:
    """Canonicalize an unusual spelling (sign, exponent) without Decimal or its contexts."""
    match = _NUMBER.fullmatch(text)
    if match is None:
        raise DecodeError(f"not a decimal number: {_show(text)}")
    sign, head, tail, exponent = match.groups()
    tail = tail or ""
    if not (head or tail):
        raise DecodeError(f"not a decimal number: {_show(text)}")
    digits = (head + tail).lstrip("0")
    stripped = digits.rstrip("0")
    if not stripped:
        return "0"
    exp = int(exponent or 0) - len(tail) + len(digits) - len(stripped)
    return _expand(sign == "-", stripped, exp)


def canonical(text: str) -> str:
    """canon without its cache, for callers that keep their own (wire/validate.py). Plain
    ASCII `digits[.digits]` (nearly every number) is done inline; the rest by `_slow`."""
    if not isinstance(text, str) or not text or len(text) > MAX_LEN:
        raise DecodeError(f"not a decimal string: {_show(text)}")
    head, _, tail = text.partition(".")
    # isascii first: isdigit alone would take `²` and `١`; a second dot fails tail's test
    if (
        text.isascii()
        and (head or tail)
        and (not head or head.isdigit())
        and (not tail or tail.isdigit())
    ):
        head = head.lstrip("0") or "0"
        tail = tail.rstrip("0")
        return f"{head}.{tail}" if tail else head
    return _slow(text)


def canon(text: str) -> str:
    """Return the canonical decimal string of `text`, or raise DecodeError."""
    try:
        hit = _CACHE.get(text)
    except TypeError:  # unhashable: certainly not a string
        hit = None
    if hit is not None:
        return hit
    out = canonical(text)
    if len(_CACHE) >= _CACHE_MAX:
        _CACHE.clear()
    _CACHE[text] = out
    return out


def canon_or_empty(text: str | None) -> str:
    """Like canon, but None and "" stay "" (a value the exchange did not send)."""
    if text is None or text == "":
        return ""
    return canon(text)


def dec(text: str) -> Decimal:
    """Decimal of a canonical string (for consumers and arithmetic; never for the bus)."""
    try:
        return Decimal(canon(text))
    except InvalidOperation as exc:  # pragma: no cover - canon's output is always a Decimal
        raise DecodeError(f"not a decimal number: {_show(text)}") from exc
