"""Dynamic interest: leases that ask the feeder to carry the tokens a consumer follows.

`P:interest` is a sorted set, token -> lease expiry in ms since the Unix epoch. Semantics:

- A consumer leases every token it subscribes to, for `lease_s` (default 60 s), and renews
  the leases of all its tokens every `lease_s / 3`, so two renewals can be missed before a
  lease lapses.
- Leases are shared: many consumers may lease one token and the set keeps one score per
  token, so a renewal only ever *extends* it (`ZADD GT`) — never shortens another consumer's.
  For the same reason `unsubscribe` removes nothing: the lease simply runs out.
- The feeder subscribes a leased token it does not carry on a live connection (`operation:
  subscribe`), and unsubscribes it once its lease has been expired for a grace period. Tokens
  the feeder was configured with are never dropped; leasing them is harmless.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from polybus.redisio import Client
from polybus.wire import keys


__all__ = ["DEFAULT_LEASE_S", "Leases"]

DEFAULT_LEASE_S = 60.0


class Leases:
    """Writes and renews one consumer's leases."""

    def __init__(self, prefix: str = keys.DEFAULT_PREFIX, lease_s: float = DEFAULT_LEASE_S) -> None:
        self.key = keys.interest(prefix)
        self.lease_s = lease_s
        self._next = 0.0

    def due(self, now: float | None = None) -> bool:
        """True when every lease should be renewed (a third of the lease has passed)."""
        return (time.monotonic() if now is None else now) >= self._next

    async def lease(self, redis: Client, tokens: Iterable[str]) -> None:
        """Lease (or extend) these tokens until now + lease (on subscribe)."""
        wanted = list(tokens)
        if wanted:
            expiry = int((time.time() + self.lease_s) * 1000)
            await redis.zadd(self.key, dict.fromkeys(wanted, expiry), gt=True)

    def renew_soon(self) -> None:
        """Renew at the next chance (Redis is back: a restarted one lost every lease)."""
        self._next = 0.0

    async def renew(self, redis: Client, tokens: Iterable[str]) -> None:
        """Extend the leases of all these tokens, and start the next renewal period (first:
        a refused renewal waits its period too, it is not retried every round)."""
        self._next = time.monotonic() + self.lease_s / 3
        await self.lease(redis, tokens)
