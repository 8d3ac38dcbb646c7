"""`polybus tail`, `book` and `top` against a live feeder's Redis."""

from __future__ import annotations

import asyncio
import re
import sys
from decimal import Decimal

from polybus.wire import keys
from tests.e2e.harness import rig
from tests.support import wait_for


async def polybus(*args: str) -> tuple[int, str, str]:
    """Run `polybus ARGS` in a subprocess; (exit code, stdout, stderr)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "polybus",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    return proc.returncode or 0, out.decode(), err.decode()


async def test_tail_prints_decoded_lines(redis_server) -> None:
    """tail prints one readable line per event: time, token, seq, type and details."""
    async with rig(redis_server) as r:
        await wait_for(lambda: r.feeder.published > 20, 10, "events published")
        code, out, _ = await polybus(
            "tail",
            "--redis-url",
            redis_server.url,
            "--count",
            "8",
            "--from-start",
            "--tokens",
            r.tokens[0],
        )
        assert code == 0
        lines = out.splitlines()
        assert len(lines) == 8
        assert re.match(r"^\d\d:\d\d:\d\d\.\d{3} \d{6}…\d{4} seq=1 status connected", lines[0])
        assert " seq=2 book " in lines[1]


async def test_book_prints_levels_best_first_with_status(redis_server) -> None:
    """book shows status synced, and bids descending and asks ascending."""
    async with rig(redis_server) as r:
        token = r.tokens[0]
        await wait_for(lambda: _synced(r, token), 10, "a synced book")
        await r.sim.pause()
        code, out, _ = await polybus(
            "book", token, "--redis-url", redis_server.url, "--depth", "50"
        )
        assert code == 0
        assert "status synced" in out
        rows = [line.split("|") for line in out.splitlines()[4:]]
        bids = [Decimal(b.split()[1]) for b, _ in rows if b.strip()]
        asks = [Decimal(a.split()[0]) for _, a in rows if a.strip()]
        truth_bids, truth_asks = r.sim.engine.true_book(token)
        assert bids == [Decimal(p) for p, _ in truth_bids]
        assert asks == [Decimal(p) for p, _ in truth_asks]


async def test_book_of_an_unknown_token_and_bad_input(redis_server) -> None:
    """An absent book exits 1 with a hint; a non-token argument exits 2 with the reason."""
    code, out, _ = await polybus("book", "123", "--redis-url", redis_server.url)
    assert code == 1 and "no book in Redis" in out
    code, _, err = await polybus("book", "0xabc", "--redis-url", redis_server.url)
    assert code == 2 and "decimal digits" in err


async def test_top_once_lists_every_book(redis_server) -> None:
    """top --once prints a table with a row per book and its status."""
    async with rig(redis_server, markets=2) as r:
        await wait_for(lambda: all_synced(r), 10, "synced books")
        code, out, _ = await polybus("top", "--once", "--redis-url", redis_server.url)
        assert code == 0
        assert "4 books" in out
        assert out.count("synced") == 4


async def _synced(r, token: str) -> bool:
    return await r.redis.hget(keys.book(token), "status") == "synced"


async def all_synced(r) -> bool:
    for token in r.tokens:
        if not await _synced(r, token):
            return False
    return True


async def test_tail_without_tokens_follows_every_stream(redis_server) -> None:
    """With no --tokens, tail finds every token stream by SCAN and prints them all."""
    async with rig(redis_server, markets=2) as r:
        await wait_for(lambda: all_synced(r), 10, "synced books")
        await r.sim.pause()
        total = sum([await r.redis.xlen(keys.stream(t)) for t in r.tokens])
        code, out, _ = await polybus(
            "tail", "--redis-url", redis_server.url, "--from-start", "--count", str(total)
        )
        assert code == 0
        shown = {line.split()[1] for line in out.splitlines()}
        assert len(out.splitlines()) == total
        assert shown == {f"{t[:6]}…{t[-4:]}" for t in r.tokens}


async def test_tail_and_book_survive_garbage_in_redis(redis_server) -> None:
    """A non-UTF-8 entry and a hash with a non-number level: tail prints the entry as
    undecodable and goes on, book shows the valid levels; neither crashes."""
    import redis.asyncio as aioredis

    raw = aioredis.Redis.from_url(redis_server.url)
    token = "4242"
    await raw.xadd(keys.stream(token), {b"type": b"status", b"state": b"\xff", b"seq": b"1"})
    await raw.xadd(
        keys.stream(token),
        {b"type": b"status", b"state": b"connected", b"seq": b"2", b"epoch": b"1", b"rx": b"1"},
    )
    await raw.hset(
        keys.book(token), mapping={b"bid:zz": b"1", b"bid:0.4": b"5", b"status": b"synced"}
    )
    await raw.aclose()
    code, out, err = await polybus(
        "tail", "--redis-url", redis_server.url, "--count", "2", "--from-start", "--tokens", token
    )
    assert code == 0, err
    lines = out.splitlines()
    assert "undecodable" in lines[0] and "status connected" in lines[1]
    code, out, err = await polybus("book", token, "--redis-url", redis_server.url)
    assert code == 0, err
    assert "0.4" in out and "zz" not in out
