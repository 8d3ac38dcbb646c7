"""A Redis Cluster's partial failures, per token: what the publisher holds and what it drops.

On a cluster a batch's token steps go to several primaries, and during a primary's failover
only that primary's share fails. Each failed step is one of two kinds (polybus.redisio.nodes):
- declined (CLUSTERDOWN, TRYAGAIN, MOVED, …: the step did not run): its entries are **held**
  and sent first with the next batch, in order, the seq check unchanged — the cluster says
  CLUSTERDOWN on every primary between a primary's failure and its replica's promotion, and
  those tokens have lost nothing;
- unreached (refused, reset, timed out: whether it ran is unknown): the token is **stranded**.
  Its events are dropped from then on (writing later events after lost ones would break its
  order), and the publisher probes its slot with a `suspect` status; the probe that lands
  marks the book suspect in band, before anything else of it is written, and the token is
  resynced (a fresh snapshot replaces what was dropped).
A token held too long (HOLD_S), or while too much is held (HOLD_LIMIT entries), is stranded
instead: holding is for a failover's seconds, not for a cluster that stays down. Pure: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from polybus.wire.codec import Items


__all__ = ["HOLD_LIMIT", "HOLD_S", "PROBE_S", "Held", "Strands"]

HOLD_S = 5.0
"""Seconds a token's declined entries are held at most (a failover takes 1–4 s)."""

HOLD_LIMIT = 100_000
"""Entries held at most, all tokens together (the outbox's default capacity)."""

PROBE_S = 0.1
"""Seconds between two probes of the stranded tokens' slots."""


@dataclass(slots=True)
class Held:
    """A token's declined entries, oldest first, and the fence they were queued under."""

    args: list[Items]
    fence: int | None
    since: float


@dataclass
class Strands:
    """Held and stranded tokens of one publisher."""

    held: dict[str, Held] = field(default_factory=dict)
    stranded: set[str] = field(default_factory=set)
    dropped: int = 0
    """Entries of stranded tokens dropped (they are resynced instead)."""
    probed: float = float("-inf")
    """When the stranded tokens were last probed (monotonic s)."""
    since: dict[str, float] = field(default_factory=dict)
    """token -> when the entries of its step in flight were first held."""

    def take(
        self, token: str, args: list[Items], fence: int | None
    ) -> tuple[list[Items], int | None]:
        """What to send for a token now: its held entries first, then `args` (the batch's);
        nothing (and counted) for a stranded token."""
        if token in self.stranded:
            self.dropped += len(args)
            return [], fence
        held = self.held.pop(token, None)
        if held is None:
            return args, fence
        self.since[token] = held.since
        return [*held.args, *args], held.fence if fence is None else fence

    def hold(self, token: str, args: list[Items], fence: int | None, now: float) -> bool:
        """Hold a declined step's entries; False (and the token stranded) when it was held
        too long already or too much is held."""
        since = self.since.pop(token, now)
        if now - since > HOLD_S or self.entries() + len(args) > HOLD_LIMIT:
            self.strand(token)
            self.dropped += len(args)
            return False
        self.held[token] = Held(args, fence, since)
        return True

    def strand(self, token: str) -> None:
        """Drop what is held of a token and every later event, until a probe lands."""
        self.since.pop(token, None)
        if (held := self.held.pop(token, None)) is not None:
            self.dropped += len(held.args)
        self.stranded.add(token)

    def landed(self, token: str) -> None:
        """A step of a token was written: it is neither held nor stranded any more."""
        self.since.pop(token, None)
        self.stranded.discard(token)

    def probes(self, now: float) -> list[str]:
        """The stranded tokens to probe now (all of them, at most every PROBE_S)."""
        if not self.stranded or now - self.probed < PROBE_S:
            return []
        self.probed = now
        return sorted(self.stranded)

    def entries(self) -> int:
        """Entries held, all tokens together."""
        return sum(len(h.args) for h in self.held.values())

    def clear(self) -> None:
        """Forget everything (a full resync follows)."""
        self.held.clear()
        self.stranded.clear()
        self.since.clear()
