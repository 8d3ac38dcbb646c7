"""Canonical decimal strings: the only way numbers travel on the bus (never floats).

`.48`, `0.480` and `0.48` are all `0.48`; `1200.0` is `1200`; `-0` is `0`.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

from wire.errors import DecodeError


__all__ = ["canon", "canon_or_empty", "dec"]

_CACHE: dict[str, str] = {}
_CACHE_MAX = 65536
_DIGITS = frozenset("0123456789")


def _slow(text: str) -> str:
    """Canonicalize an unusual spelling (sign, exponent) through Decimal."""
    try:
        value = Decimal(text)
    except InvalidOperation as exc:
        raise DecodeError(f"not a decimal number: {text!r:.60}") from exc
    if not value.is_finite():
        raise DecodeError(f"not a finite decimal: {text!r:.60}")
    if value == 0:
        return "0"
    out = format(value.normalize(), "f")
    return out


def _fast(text: str) -> str | None:
    """Canonicalize plain `digits[.digits]` spellings without Decimal; None if unusual."""
    head, dot, tail = text.partition(".")
    if not (set(head) <= _DIGITS and set(tail) <= _DIGITS) or not (head or tail):
        return None
    if dot and "." in tail:
        return None
    head = head.lstrip("0") or "0"
    tail = tail.rstrip("0")
    return f"{head}.{tail}" if tail else head


def canon(text: str) -> str:
    """Return the canonical decimal string of `text`, or raise DecodeError."""
    hit = _CACHE.get(text)
    if hit is not None:
        return hit
    if not isinstance(text, str) or not text or len(text) > 64:
        raise DecodeError(f"not a decimal string: {text!r:.60}")
    out = _fast(text)
    if out is None:
        out = _slow(text.strip())
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
        return Decimal(text)
    except InvalidOperation as exc:
        raise DecodeError(f"not a decimal number: {text!r:.60}") from exc
