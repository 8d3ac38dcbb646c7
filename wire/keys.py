"""Every Redis key name polybus uses, and nowhere else (DESIGN.md §2, fixed).

`{T}` is a Redis Cluster hash tag, so a token's book and stream live in the same slot and
one Lua step can touch both.
"""

from __future__ import annotations

from polybus.wire.errors import InvalidToken


__all__ = [
    "DEFAULT_PREFIX",
    "book",
    "book_pattern",
    "consumer",
    "consumer_pattern",
    "feeder",
    "feeder_pattern",
    "fence",
    "handover",
    "interest",
    "lease",
    "markets",
    "members",
    "moved",
    "partitions",
    "prefix_pattern",
    "quarantine",
    "stream",
    "stream_pattern",
    "token_of",
    "validate_token",
]

DEFAULT_PREFIX = "pm"
_MAX_TOKEN_DIGITS = 100


def validate_token(token: str) -> str:
    """Return `token` if it is a decimal string of 1..100 digits, else raise InvalidToken."""
    if (
        not isinstance(token, str)
        or not 0 < len(token) <= _MAX_TOKEN_DIGITS
        or not token.isascii()
        or not token.isdigit()
    ):
        raise InvalidToken(f"token id must be 1-100 decimal digits, got {token!r:.120}")
    return token


def book(token: str, prefix: str = DEFAULT_PREFIX) -> str:
    """Hash holding the current book of `token` and the stream id it covers."""
    return f"{prefix}:book:{{{token}}}"


def stream(token: str, prefix: str = DEFAULT_PREFIX) -> str:
    """Stream of every normalized event of `token`, in wire order."""
    return f"{prefix}:stream:{{{token}}}"


def book_pattern(prefix: str = DEFAULT_PREFIX) -> str:
    """SCAN pattern matching every book hash."""
    return f"{prefix}:book:*"


def stream_pattern(prefix: str = DEFAULT_PREFIX) -> str:
    """SCAN pattern matching every token stream."""
    return f"{prefix}:stream:*"


def prefix_pattern(prefix: str = DEFAULT_PREFIX) -> str:
    """SCAN pattern of every key under a prefix."""
    return f"{prefix}:*"


def consumer_pattern(prefix: str = DEFAULT_PREFIX) -> str:
    """SCAN pattern matching every consumer's cursor hash."""
    return f"{prefix}:consumer:*"


def token_of(key: str) -> str:
    """The token inside a book or stream key's hash tag."""
    start, end = key.find("{"), key.rfind("}")
    if start < 0 or end <= start:
        raise InvalidToken(f"no hash tag in key {key!r}")
    return validate_token(key[start + 1 : end])


def markets(prefix: str = DEFAULT_PREFIX) -> str:
    """Stream of market lifecycle events (new_market, market_resolved), deduplicated."""
    return f"{prefix}:markets"


def feeder(feeder_id: str, prefix: str = DEFAULT_PREFIX) -> str:
    """Hash with a TTL: one feeder's health."""
    return f"{prefix}:feeder:{feeder_id}"


def feeder_pattern(prefix: str = DEFAULT_PREFIX) -> str:
    """SCAN pattern matching every feeder's health key."""
    return f"{prefix}:feeder:*"


def interest(prefix: str = DEFAULT_PREFIX) -> str:
    """Sorted set: token -> lease expiry (ms). Consumers ask, the feeder subscribes."""
    return f"{prefix}:interest"


def quarantine(prefix: str = DEFAULT_PREFIX) -> str:
    """Stream of raw frames that could not be used, with the reason."""
    return f"{prefix}:quarantine"


def consumer(name: str, prefix: str = DEFAULT_PREFIX) -> str:
    """Hash with a TTL: one consumer's cursors, for lag reporting."""
    return f"{prefix}:consumer:{name}"


def partitions(prefix: str = DEFAULT_PREFIX) -> str:
    """String: the partition count every feeder on this prefix uses (set once)."""
    return f"{prefix}:partitions"


def members(prefix: str = DEFAULT_PREFIX) -> str:
    """Sorted set: live feeder id -> membership expiry (server ms)."""
    return f"{prefix}:members"


def lease(partition: int, prefix: str = DEFAULT_PREFIX) -> str:
    """String with a TTL: `fence:feeder_id` of the feeder that writes this partition."""
    return f"{prefix}:lease:{{p{partition}}}"


def fence(partition: int, prefix: str = DEFAULT_PREFIX) -> str:
    """Counter: the partition's last fencing number (only grows; same slot as its lease)."""
    return f"{prefix}:fence:{{p{partition}}}"


def handover(prefix: str = DEFAULT_PREFIX) -> str:
    """Pub/sub channel: partitions a leader has just released ("3,7")."""
    return f"{prefix}:handover"


def moved(partition: int, prefix: str = DEFAULT_PREFIX) -> str:
    """Stream, on a Redis Cluster only: per batch, the tokens of partition N whose streams the
    feeder just wrote (`tokens` = space-separated ids). A consumer cannot XREAD streams of many
    slots at once; it blocks on these instead, then reads only the named streams."""
    return f"{prefix}:moved:{{p{partition}}}"
