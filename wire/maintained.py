"""Is a book maintained? The one rule, from what Redis holds alone (docs/wire.md). Pure.

A book hash says `status=synced` for as long as nobody changes it — a SIGKILLed feeder leaves
its books `synced` forever. What proves that someone still maintains the book is its writer:

- **partitioned prefix** (`P:partitions` exists: redundant feeders, docs/ha.md): the lease of
  the token's partition (`P:lease:{pN}`, N = `partition_of(token, count)`) is live and its
  holder is the hash's `writer` → `maintained`. A live lease held by another feeder →
  `handover`: a new leader took the partition over and has not written this book yet (its
  `failover` entry, the events the old leader missed and a snapshot follow at once); the book
  is as good as the old leader left it. No live lease (or one nobody could have written) →
  `unmaintained`: no feeder may write the book, nothing updates it.
- **older feeders** (no `P:partitions`): the writer's health key `P:feeder:<writer>` exists →
  `maintained` (its `state` is in the reason); gone → `unmaintained`; no `writer` in the
  hash → `unknown` (written before writers were recorded).

Lease liveness is the key's own TTL on the server, so no reader's clock takes part. Garbage in
any of these keys (someone else wrote them) reads as no lease, with the reason saying so:
never an exception. `polybus book`, `top`, `health` and `MarketFeed` all judge by `judge`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from polybus.wire.errors import DecodeError
from polybus.wire.partitions import Lease, decode_lease


__all__ = [
    "HANDOVER",
    "MAINTAINED",
    "UNKNOWN",
    "UNMAINTAINED",
    "Verdict",
    "judge",
    "partition_count",
    "read_lease",
]

MAINTAINED = "maintained"
HANDOVER = "handover"
UNMAINTAINED = "unmaintained"
UNKNOWN = "unknown"

_MAX_PARTITIONS = 1 << 20


@dataclass(frozen=True, slots=True)
class Verdict:
    """Whether a book is maintained, and why."""

    state: str
    """MAINTAINED, HANDOVER, UNMAINTAINED or UNKNOWN."""
    reason: str
    """One line for people: who holds what (`writer a holds lease p3 fence 7`)."""
    writer: str = ""
    """The hash's `writer` ("" when none)."""
    lease: Lease | None = None
    """The partition's live lease (partitioned prefix only)."""

    @property
    def live(self) -> bool:
        """A feeder may write this book now (maintained, or a hand-over in progress)."""
        return self.state in (MAINTAINED, HANDOVER)


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value if isinstance(value, str) else None


def partition_count(value: Any) -> int | None:
    """`P:partitions` as GET returned it: the count, or None when absent or not a count
    from 1 to 2^20 in decimal digits; anything else someone else wrote)."""
    text = _text(value)
    if text is None or not (text.isascii() and text.isdigit()) or len(text) > 8:
        return None
    count = int(text)
    return count if 0 < count <= _MAX_PARTITIONS else None


def read_lease(value: Any) -> Lease | None:
    """A lease key's value as GET returned it; None when absent or not a lease."""
    text = _text(value)
    if text is None:
        return None
    try:
        return decode_lease(text)
    except DecodeError:
        return None


def judge(
    fields: Mapping[Any, Any],
    *,
    partitions: Any,
    partition: int | None = None,
    lease: Any = None,
    health: Mapping[Any, Any] | None = None,
) -> Verdict:
    """The verdict on one book.

    `fields`: the book hash (or at least its `writer` and `fence`), bytes or text.
    `partitions`: GET `P:partitions` (None: absent, the older feeders' rule applies).
    `partition`, `lease`: the token's partition and GET of its lease key (None: no live lease).
    `health`: HGETALL of `P:feeder:<writer>` (older feeders only; None or {}: gone).
    """
    f = {_text(k): _text(v) for k, v in fields.items()}
    writer = f.get("writer") or ""
    if partitions is None:
        return _by_health(writer, health)
    count = partition_count(partitions)
    if count is None:
        return Verdict(
            UNMAINTAINED,
            f"P:partitions holds {_text(partitions)!r:.40}, not a "
            "partition count: no feeder can lead",
            writer,
        )
    where = f"p{partition}" if partition is not None else "its partition"
    held = read_lease(lease)
    if held is None:
        why = "no live lease" if lease is None else f"lease {_text(lease)!r:.40} is garbage"
        return Verdict(UNMAINTAINED, f"{why} on {where}: nobody may write this book", writer)
    fence = f.get("fence") or "?"
    if writer == held.holder:
        return Verdict(
            MAINTAINED, f"writer {writer} holds lease {where} fence {held.fence}", writer, held
        )
    return Verdict(
        HANDOVER,
        f"hand-over in progress: {held.holder} holds lease {where} fence {held.fence}, "
        f"last written by {writer or 'nobody'} fence {fence}",
        writer,
        held,
    )


def _by_health(writer: str, health: Mapping[Any, Any] | None) -> Verdict:
    """The older feeders' rule: the writer's health key exists."""
    if not writer:
        return Verdict(UNKNOWN, "writer unknown (written before writers were recorded)")
    if not health:
        return Verdict(
            UNMAINTAINED,
            f"writer {writer} GONE: its health key expired, nobody maintains this book",
            writer,
        )
    h = {_text(k): _text(v) for k, v in health.items()}
    state = h.get("state") or "?"
    redis = h.get("redis") or ""
    why = (
        f", redis {redis} {h.get('redis_error') or ''}".rstrip() if redis not in ("", "ok") else ""
    )
    return Verdict(MAINTAINED, f"writer {writer} {state}{why}", writer)
