"""Poisoned data in Redis: what one token cannot use, reported once, retried with backoff. Pure.

A stream entry, book hash or key that cannot be decoded (garbage written by hand, a bug, an
attack) must cost only its own token, and only once:

- a poisoned *entry* is remembered by id: the first time it is seen it is reported and its
  token reloaded; when it comes back (the hash's `last_id` is before it) it is stepped over
  quietly — the reader never loops on it;
- a poisoned *hash* or key (corrupt fields, wrong type, no permission) is reported once;
  while it stays so, the token is retried with exponential backoff, quietly, and stays
  suspect; the report re-arms once the token loaded cleanly.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field


__all__ = ["Poison"]

_MAX_IDS = 64
"""Poisoned entry ids remembered per token (the oldest are dropped: long behind the cursor)."""


@dataclass(slots=True)
class _Token:
    ids: dict[str, None] = field(default_factory=dict)
    attempt: int = 0
    retry_at: float = 0.0
    reported: bool = False


class Poison:
    """Per-token record of poisoned data; times are the caller's monotonic clock."""

    def __init__(
        self, base: float = 0.2, cap: float = 10.0, rng: random.Random | None = None
    ) -> None:
        self.base, self.cap = base, cap
        self._rng = rng or random.Random()
        self.tokens: dict[str, _Token] = {}
        """Tokens with a record (a token not here has nothing poisoned: the hot path asks)."""
        self.entries = 0
        """Poisoned entries seen (each counted once)."""

    def _of(self, token: str) -> _Token:
        state = self.tokens.get(token)
        if state is None:
            state = self.tokens[token] = _Token()
        return state

    def known(self, token: str, entry_id: str) -> bool:
        """Whether this entry was already found poisoned (step over it quietly)."""
        state = self.tokens.get(token)
        return state is not None and entry_id in state.ids

    def entry(self, token: str, entry_id: str, now: float) -> None:
        """Remember a poisoned entry and schedule the token's reload with backoff."""
        state = self._of(token)
        state.ids[entry_id] = None
        if len(state.ids) > _MAX_IDS:
            del state.ids[next(iter(state.ids))]
        self.entries += 1
        self._schedule(state, now)

    def bad(self, token: str, now: float) -> bool:
        """The token's hash or key is unusable: schedule a retry with backoff. True the first
        time (report it), False while it stays bad (stay quiet)."""
        state = self._of(token)
        self._schedule(state, now)
        first, state.reported = not state.reported, True
        return first

    def good(self, token: str) -> None:
        """The token loaded cleanly: the backoff restarts, a new problem is reported again."""
        state = self.tokens.get(token)
        if state is not None:
            state.attempt, state.retry_at, state.reported = 0, 0.0, False

    def due(self, token: str, now: float) -> bool:
        """Whether the token may be reloaded now."""
        state = self.tokens.get(token)
        return state is None or now >= state.retry_at

    def forget(self, token: str) -> None:
        """The token is no longer followed."""
        self.tokens.pop(token, None)

    def _schedule(self, state: _Token, now: float) -> None:
        state.attempt += 1
        delay = min(self.base * 2 ** (state.attempt - 1), self.cap)
        state.retry_at = now + self._rng.uniform(delay / 2, delay)
