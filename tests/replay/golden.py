"""Golden sessions: where they live, and the normalized output they are compared on."""

from __future__ import annotations

from pathlib import Path

import orjson
import redis.asyncio as aioredis

from polybus.wire import keys


SESSIONS = Path(__file__).resolve().parents[1] / "data" / "sessions"
NAMES = ("calm", "faults")


def recording(name: str) -> Path:
    """The raw recording of a golden session (the fixed input)."""
    return SESSIONS / f"{name}.jsonl.gz"


def expected(name: str) -> Path:
    """Its expected normalized output (derived from the recording by the real code)."""
    return SESSIONS / f"{name}.expected.jsonl"


WRITER = ("last_id", "writer", "lease", "fence")
"""Hash fields of the writer's bookkeeping, not book state: a replay has no writer."""
ENTRY_SKIP = ("rx", "writer")
"""Entry fields a replay cannot reproduce: when it was received, and who wrote it (a replay
writes anonymously: no feeder maintains a replayed prefix)."""


async def dump(redis: aioredis.Redis, prefix: str) -> list[dict[str, str]]:
    """Everything a replay wrote under `prefix`, without ids, `rx` and `last_id`: per token
    (sorted) its stream entries then its final hash, then quarantine and lifecycle entries."""
    out: list[dict[str, str]] = []
    streams = sorted([k async for k in redis.scan_iter(match=keys.stream_pattern(prefix))])
    for key in streams:
        token = keys.token_of(key)
        for _, fields in await redis.xrange(key):
            out.append(
                {
                    "kind": "entry",
                    "token": token,
                    **{k: v for k, v in fields.items() if k not in ENTRY_SKIP},
                }
            )
        book = await redis.hgetall(keys.book(token, prefix))
        out.append(
            {
                "kind": "hash",
                "token": token,
                **dict(sorted((k, v) for k, v in book.items() if k not in WRITER)),
            }
        )
    for kind, key in (("quarantine", keys.quarantine(prefix)), ("market", keys.markets(prefix))):
        for _, fields in await redis.xrange(key):
            out.append({"kind": kind, **{k: v for k, v in fields.items() if k != "rx"}})
    return out


def to_text(rows: list[dict[str, str]]) -> str:
    """JSONL, one row per line, keys in a stable order."""
    return "".join(orjson.dumps(row).decode() + "\n" for row in rows)
