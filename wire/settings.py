"""Where the bus is: the Redis URL and key prefix, resolved the same way by every reader.

Flags (or constructor arguments) win over the environment, the environment over `.env`
(which the `polybus` console script loads into the environment first, never overriding
it), `.env` over the defaults here. Every command, `MarketFeed`, `GroupReader` and the
feeder's configuration take their Redis URL and prefix from `bus_target`; the defaults are
written nowhere else. Pure: the environment is passed in as a mapping.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from polybus.wire.keys import DEFAULT_PREFIX


__all__ = ["DEFAULT_REDIS_URL", "PREFIX_ENV", "REDIS_URL_ENV", "BusTarget", "bus_target"]

DEFAULT_REDIS_URL = "redis://localhost:6379/0"
REDIS_URL_ENV = "REDIS_URL"
PREFIX_ENV = "POLYBUS_PREFIX"


@dataclass(frozen=True, slots=True)
class BusTarget:
    """The Redis server and key prefix to use."""

    redis_url: str
    prefix: str
    redis_url_given: bool
    """False when nobody named a Redis (the default URL): the demo then starts its own."""


def bus_target(
    env: Mapping[str, str], *, redis_url: str | None = None, prefix: str | None = None
) -> BusTarget:
    """The Redis URL and prefix: the given values, else `env`'s (blank counts as unset),
    else the defaults."""
    url = _first(redis_url, env.get(REDIS_URL_ENV))
    return BusTarget(
        redis_url=url or DEFAULT_REDIS_URL,
        prefix=_first(prefix, env.get(PREFIX_ENV)) or DEFAULT_PREFIX,
        redis_url_given=bool(url),
    )


def _first(*values: str | None) -> str:
    for value in values:
        if value and value.strip():
            return value.strip()
    return ""
