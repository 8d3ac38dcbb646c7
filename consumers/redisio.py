"""The consumers' side of the Redis boundary: the client they open, raw reads, what an error means.

Everything a consumer reads from Redis is untrusted input: anyone with write access can put
a non-UTF-8 byte in a stream entry or a field name. A client that decodes replies would then
raise for the *whole* reply (every token of one XREAD) — or worse, mid-pipeline. So data is
read with redis-py's `NEVER_DECODE` option (whatever the client's `decode_responses`) and
decoded per entry here, where one bad entry can be told apart from the others.

`classify` sorts a Redis failure by what the caller can do:
- `lost`: the server went away or stopped answering (refused connection, reset, socket
  timeout), or a cluster is failing over: reconnect with backoff;
- `fatal`: no retry can fix it (bad URL, wrong password, disabled user, unknown DB);
- `refused`: the server answered with an error (NOPERM from an ACL, WRONGTYPE, OOM, …):
  report it, back off, try again later — an operator may fix it.
"""

from __future__ import annotations

import contextlib
import itertools
import re
from collections.abc import Iterator
from typing import Any, Literal

from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.client import NEVER_DECODE
from redis.exceptions import (
    AuthenticationError,
    AuthorizationError,
    ConnectionError as RedisConnectionError,
    NoPermissionError,
    RedisError,
    ResponseError,
    TimeoutError as RedisTimeoutError,
)

from polybus.redisio import UNSETTLED, Client, connect, on_cluster
from polybus.wire import keys
from polybus.wire.errors import ConfigError, DecodeError
from polybus.wire.hashes import HealthField


__all__ = [
    "RAW",
    "Kind",
    "XreadPacker",
    "classify",
    "explain",
    "open_client",
    "probe",
    "raw",
    "safe_url",
    "scan",
    "send_packed",
    "stream_id",
    "text",
]

RAW: dict[str, Any] = {NEVER_DECODE: True}
"""Options for `execute_command`: return the reply's bytes undecoded."""

Kind = Literal["lost", "fatal", "refused"]

_STREAM_ID = re.compile(r"\d{1,20}-\d{1,20}")
_UNREACHED: tuple[type[Exception], ...] = (
    RedisConnectionError,
    RedisTimeoutError,
    OSError,
    *UNSETTLED,
)
"""What a primary failing over answers (scan(partial=True) leaves that primary out)."""
_FATAL_REPLIES = ("DB index is out of range", "invalid DB index", "WRONGPASS", "NOAUTH")


async def open_client(url: str, *, socket_timeout: float) -> Client:
    """A client for `url` (redis://, rediss://…?ssl_ca_certs=PATH, unix://) that fails fast:
    no hidden retries (the caller has its own backoff) and a read timeout, so a server that
    stops answering is noticed within `socket_timeout`; a cluster client when `url` names a
    cluster node (polybus.redisio asks). Raises ConfigError for a bad URL, and what redis-py
    raises when the server cannot be reached."""
    try:
        return await connect(
            url,
            decode_responses=True,
            socket_connect_timeout=3,
            socket_timeout=socket_timeout,
            retry=Retry(NoBackoff(), 0),
        )
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"REDIS_URL {safe_url(url)!r} is not a Redis URL: {exc}") from exc


async def raw(redis: Client, *args: Any) -> Any:
    """One command whose reply comes back undecoded (bytes)."""
    return await redis.execute_command(*args, **RAW)


class XreadPacker:
    """`XREAD COUNT c BLOCK b STREAMS k… id…` in the protocol's bytes, packed here rather than
    by redis-py, which packs each argument in Python: about 1 µs each on this 2-core machine,
    5-9 ms for 2,000 streams — every fetch. The streams' part is packed once per set of
    streams followed, each id once (ids repeat from fetch to fetch: most streams did not
    move)."""

    def __init__(self) -> None:
        self._keys: tuple[str, ...] = ()
        self._blob = b""
        self._ids: dict[str, bytes] = {}

    def pack(self, count: int, block: int, streams: tuple[str, ...], ids: list[str]) -> bytes:
        if streams != self._keys:
            self._keys, self._blob = streams, b"".join(_bulk(k.encode()) for k in streams)
        if len(self._ids) > 4 * len(ids) + 64:
            self._ids.clear()  # old cursors
        packed = self._ids
        head = b"*%d\r\n$5\r\nXREAD\r\n$5\r\nCOUNT\r\n%s$5\r\nBLOCK\r\n%s$7\r\nSTREAMS\r\n" % (
            6 + 2 * len(streams),
            _bulk(b"%d" % count),
            _bulk(b"%d" % block),
        )
        parts = [head, self._blob]
        for i in ids:
            one = packed.get(i)
            if one is None:
                one = packed[i] = _bulk(i.encode())
            parts.append(one)
        return b"".join(parts)


def _bulk(value: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(value), value)


async def send_packed(redis: Client, packed: bytes) -> Any:
    """One command already in the protocol's bytes (XreadPacker) on a pooled connection, its
    reply undecoded and as the server sent it (RESP3 XREAD: {key: [[id, [name, value, …]],
    …]}), not reshaped by redis-py's reply callback — building its tuples and dicts costs
    as much as reading the reply. Errors as execute_command raises them; a connection that
    failed (not an error reply: a timeout, a reset, a cancel mid-reply) is closed, as
    redis-py closes it, so no later command reads this one's reply."""
    assert not isinstance(redis, RedisCluster), "one server only: a cluster has many"
    pool = redis.connection_pool
    conn = await pool.get_connection()  # type: ignore[no-untyped-call]
    try:
        await conn.send_packed_command(packed)
        return await conn.read_response(disable_decoding=True)
    except ResponseError:
        raise
    except BaseException:
        await conn.disconnect()
        raise
    finally:
        await pool.release(conn)


async def probe(redis: Client, prefix: str) -> None:
    """PING, then one of each read a MarketFeed makes (of a token that does not exist), so an
    ACL that denies them fails `connect()` rather than the loop later."""
    await redis.ping()
    token, pipe = "0", redis.pipeline(transaction=False)
    pipe.execute_command("HGETALL", keys.book(token, prefix), **RAW)
    pipe.execute_command("XREAD", "COUNT", 1, "STREAMS", keys.stream(token, prefix), "0-0", **RAW)
    pipe.execute_command("HGET", keys.feeder(token, prefix), HealthField.STARTED, **RAW)
    pipe.execute_command("GET", keys.partitions(prefix), **RAW)  # who writes: leases
    if on_cluster(redis):  # a cluster pipeline refuses SCAN (it goes to every primary)
        moved = keys.moved(0, prefix)  # the notices' reads (consumers/moved.py)
        pipe.execute_command("XREAD", "COUNT", 1, "STREAMS", moved, "0-0", **RAW)
        pipe.execute_command("XREVRANGE", moved, "+", "-", "COUNT", 1, **RAW)
    else:
        pipe.execute_command("SCAN", 0, "MATCH", keys.feeder_pattern(prefix), "COUNT", 1, **RAW)
    await pipe.execute()
    if on_cluster(redis):
        await scan(redis, keys.feeder_pattern(prefix), count=1, steps=1)


async def scan(
    redis: Client, pattern: str, *, count: int = 1000, steps: int = 0, partial: bool = False
) -> set[str]:
    """The key names matching `pattern` on one server, or on every primary of a cluster (a
    SCAN cursor is a node's own). Names that are not UTF-8 are left out. `steps` > 0: stop
    after that many SCAN calls per node (a probe). `partial`: on a cluster, a primary that
    cannot be reached (failing over) is left out rather than raised, unless none answers."""
    nodes: list[Any] = [None]
    if isinstance(redis, RedisCluster):
        await redis.initialize()  # a new client knows no node until its first command
        nodes = list(redis.get_primaries())
    found: set[str] = set()
    failed: list[BaseException] = []
    for node in nodes:
        try:
            found |= await _scan_node(redis, node, pattern, count, steps)
        except _UNREACHED as exc:
            if not partial or node is None:
                raise
            failed.append(exc)
    if failed and len(failed) == len(nodes):
        raise failed[0]
    return found


async def _scan_node(redis: Client, node: Any, pattern: str, count: int, steps: int) -> set[str]:
    found: set[str] = set()
    where = {} if node is None else {"target_nodes": node}
    cursor: Any = 0
    for _ in itertools.count(1) if steps <= 0 else range(steps):
        reply: Any = await redis.execute_command(
            "SCAN", cursor, "MATCH", pattern, "COUNT", count, **RAW, **where
        )
        cursor, names = reply
        if isinstance(cursor, dict):  # a cluster's cursors are {node name: cursor}
            cursor = next(iter(cursor.values()))
        found.update(_names(names))
        if int(cursor) == 0:
            break
    return found


def _names(names: list[Any]) -> Iterator[str]:
    for name in names:
        with contextlib.suppress(DecodeError):
            yield text(name)


def classify(exc: BaseException) -> Kind:
    """What a Redis failure means for the caller (see the module docstring)."""
    if isinstance(exc, ConfigError | AuthenticationError | AuthorizationError):
        return "fatal"
    if isinstance(exc, RedisError) and any(s in str(exc) for s in _FATAL_REPLIES):
        return "fatal"
    if isinstance(exc, UNSETTLED):  # a cluster mid-failover (CLUSTERDOWN, TRYAGAIN, MOVED)
        return "lost"
    if isinstance(exc, NoPermissionError | ResponseError):
        return "refused"
    if isinstance(exc, RedisConnectionError | RedisTimeoutError | OSError):
        return "lost"
    return "refused"


def explain(exc: BaseException, url: str) -> Exception:
    """The exception to give on_error for a failure no retry can fix: a ConfigError naming
    the setting (the URL without its password), chained to the original."""
    if isinstance(exc, ConfigError):
        return exc
    what = "an ACL denies it" if isinstance(exc, NoPermissionError) else "no retry can fix it"
    err = ConfigError(f"REDIS_URL {safe_url(url)!r}: {what}: {exc}")
    err.__cause__ = exc
    return err


def text(value: Any) -> str:
    """A reply item as text; DecodeError if it is not UTF-8."""
    if isinstance(value, bytes):
        try:
            return value.decode()
        except UnicodeDecodeError as exc:
            raise DecodeError(f"not UTF-8: {value[:40]!r}") from exc
    if isinstance(value, str):
        return value
    raise DecodeError(f"not a string: {value!r:.40}")


def stream_id(value: str) -> str:
    """`value` if it is a stream id (`ms-seq`), else DecodeError."""
    if not _STREAM_ID.fullmatch(value):
        raise DecodeError(f"not a stream id: {value!r:.40}")
    return value


def safe_url(url: str) -> str:
    """The URL without its password (for logs and messages)."""
    return re.sub(r"(//[^:/@]*:)[^@/]*@", r"\1***@", url)
