"""What each stream entry does to its book's status: the one table of the rules. Pure.

A book hash's `status` (BOOK_STATUSES) changes only as the entries of its stream say: a
snapshot (`book`, from the socket or REST) makes it `synced`; a `status` entry (its `state`,
STATUS_STATES) makes it untrusted or retired; data entries leave it alone. Both sides fold by
this table: the feeder's Lua step (`feeder/publish.lua`) gets, with each token's step, the
status its entries lead to from each status before (`compose()`), and the consumer's fold
(`consumers/books.py`) looks it up with `after()`. tests/test_status_rules.py drives both
through every row on a real redis-server, so they cannot drift apart.

Why each rule:
- `connected`/`resubscribed` (a new upstream connection subscribed the token): a book synced
  under an older connection — or retired — may be stale (a feeder killed without a word never
  said `disconnected`), so it turns `suspect` until this connection's snapshot; a `pending`
  book stays `pending` (it never had a snapshot, so nothing about it became wrong).
- `disconnected` (its connection dropped) and `suspect` (a check failed): `suspect`, whatever
  the book was, until the next snapshot (invariant 4).
- `retired` (no feeder carries the token any more): `retired`, whatever it was.
- `resynced` is reserved: it changes nothing.
- `failover` (a standby took the token's partition over, docs/ha.md): nothing changes —
  what the old leader missed and the new leader's warm snapshot follow at once; a new
  leader without a warm book writes `suspect` itself.
- `book`: `synced`, whatever it was (invariant 3: it replaces the book wholesale).
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from types import MappingProxyType

from polybus.wire.events import BOOK_STATUSES, STATUS_STATES


__all__ = [
    "DATA_KINDS",
    "KINDS",
    "MOVING_TYPES",
    "RULES",
    "UNKNOWN_READS_AS",
    "after",
    "compose",
    "kind_of",
    "lua_positions",
]

DATA_KINDS = ("book", "price_change", "trade", "tick_size_change", "best_bid_ask")
"""The entry types other than `status`; a status entry's kind is `status:<state>`."""

KINDS = (*DATA_KINDS, *(f"status:{state}" for state in STATUS_STATES))

UNKNOWN_READS_AS = "suspect"
"""A `status` in a hash that is none of BOOK_STATUSES (someone else wrote the hash) is read
as this: untrusted until the next snapshot."""

_SAME = tuple(BOOK_STATUSES)
"""A row that changes nothing: each status stays itself."""

# Each row: the status after an entry of that kind, for each status before it, in the order
# of BOOK_STATUSES:      pending    synced     suspect    retired
_ROWS: dict[str, tuple[str, ...]] = {
    "book":                ("synced",  "synced",  "synced",  "synced"),
    "price_change":        _SAME,
    "trade":               _SAME,
    "tick_size_change":    _SAME,
    "best_bid_ask":        _SAME,
    "status:connected":    ("pending", "suspect", "suspect", "suspect"),
    "status:resubscribed": ("pending", "suspect", "suspect", "suspect"),
    "status:disconnected": ("suspect", "suspect", "suspect", "suspect"),
    "status:suspect":      ("suspect", "suspect", "suspect", "suspect"),
    "status:retired":      ("retired", "retired", "retired", "retired"),
    "status:resynced":     _SAME,
    "status:failover":     _SAME,
}  # fmt: skip

RULES: Mapping[tuple[str, str], str] = MappingProxyType(
    {
        (kind, before): row[i]
        for kind, row in _ROWS.items()
        for i, before in enumerate(BOOK_STATUSES)
    }
)
"""(entry kind, status before) -> status after, for every kind and every book status."""

assert set(_ROWS) == set(KINDS), "every entry kind has a row"
assert all(len(row) == len(BOOK_STATUSES) for row in _ROWS.values())
assert set(RULES.values()) <= set(BOOK_STATUSES)


def kind_of(entry_type: str, state: str = "") -> str:
    """The table's kind of an entry: its `type`, or `status:<state>` for a status entry."""
    return f"status:{state}" if entry_type == "status" else entry_type


def after(kind: str, before: str) -> str:
    """The book's status after an entry of `kind` (kind_of) folds into one that was `before`.

    A `before` outside BOOK_STATUSES reads as UNKNOWN_READS_AS; a kind the table does not
    know (a newer feeder's) changes nothing.
    """
    if before not in BOOK_STATUSES:
        before = UNKNOWN_READS_AS
    return RULES.get((kind, before), before)


MOVING_TYPES = frozenset(kind.partition(":")[0] for kind, row in _ROWS.items() if row != _SAME)
"""Entry types some entry of which changes a status (`book`, `status`): only those need
looking at to compose a run of entries."""


@lru_cache(maxsize=256)
def compose(kinds: tuple[str, ...]) -> tuple[str, ...]:
    """The status after a run of entries of `kinds` (kind_of, in order) folds into a book,
    for each status before it in the order of BOOK_STATUSES: the feeder's Lua step applies
    a whole step's entries this way (one lookup, not a table per call)."""
    finals = []
    for before in BOOK_STATUSES:
        status = before
        for kind in kinds:
            status = after(kind, status)
        finals.append(status)
    return tuple(finals)


def lua_positions(first: int) -> str:
    """`{[status] = n, …}` for publish.lua: the ARGV index, from `first` on, at which the
    step's status after is given for each status before it (compose's order)."""
    cells = ", ".join(f"[{_lua_str(s)}] = {first + i}" for i, s in enumerate(BOOK_STATUSES))
    return "{" + cells + "}"


def _lua_str(text: str) -> str:
    # Every name here is lower-case ASCII letters, ':' and '_'; refuse anything else rather
    # than escape it.
    if not all(c.islower() or c in ":_" for c in text):
        raise ValueError(f"not a plain name: {text!r}")
    return f"'{text}'"
