"""`polybus replay --serve`: a recording served as an exchange to an unmodified `polybus feed`."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from pathlib import Path

import pytest

from polybus.wire import keys
from tests.e2e.harness import assert_books_equal_truth, levels_of, rig
from tests.replay.golden import recording
from tests.support import RedisServer, wait_for


POLYBUS = [sys.executable, "-m", "polybus"]
ROOT = Path(__file__).resolve().parents[2]


async def _start(*args: str) -> asyncio.subprocess.Process:
    env = {**os.environ, "POLYBUS_LOG_LEVEL": "warning"}
    env.pop("PYTHONASYNCIODEBUG", None)  # set at all, even to 0, it turns debug mode on
    return await asyncio.create_subprocess_exec(
        *POLYBUS,
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
        cwd=ROOT,
    )


async def _stop(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), 10)
        except TimeoutError:
            proc.kill()
            await proc.wait()


async def _serve(path: Path) -> tuple[asyncio.subprocess.Process, str]:
    """Start `polybus replay PATH --serve 0 --speed max`; return it and its ws URL."""
    proc = await _start("replay", str(path), "--serve", "0", "--speed", "max", "--quiet")
    assert proc.stdout is not None
    line = (await asyncio.wait_for(proc.stdout.readline(), 20)).decode()
    assert line.startswith("replay.serving ws_url="), line + str(await proc.stderr.read())
    return proc, line.split("=", 1)[1].strip()


async def _books(redis, tokens: list[str]) -> dict[str, tuple]:
    out = {}
    for token in tokens:
        book = await redis.hgetall(keys.book(token))
        out[token] = (levels_of(book), book.get("status"))
    return out


@pytest.mark.slow
async def test_served_recording_gives_a_fresh_feed_the_live_books(redis_server, tmp_path) -> None:
    """Recorded live run (with a drop) → replay --serve --speed max → a real `polybus feed`
    into a fresh Redis ends with exactly the books the live run ended with."""
    path = tmp_path / "live.jsonl.gz"
    async with rig(redis_server, markets=3, seed=5, record=str(path)) as r:
        await wait_for(lambda: r.feeder.connections[0].stats.frames > 30, 10, "some frames")
        r.sim.drop_all()
        await wait_for(lambda: r.feeder.connections[0].stats.reconnects >= 1, 10, "reconnect")
        r.sim.resume()
        resumed = r.feeder.connections[0].stats.frames
        await wait_for(
            lambda: r.feeder.connections[0].stats.frames > resumed + 20,
            10,
            "traffic after the reconnect",
        )
        await assert_books_equal_truth(r)
        live = await _books(r.redis, r.tokens)
        tokens = r.tokens
    assert all(status == "synced" for _, status in live.values())
    fresh = RedisServer()
    fresh.start()
    server, url = await _serve(path)
    feed = await _start(
        "feed",
        "--tokens",
        ",".join(tokens),
        "--ws-url",
        url,
        "--redis-url",
        fresh.url,
        "--feeder-id",
        "replayed",
    )
    redis = fresh.client()
    try:

        async def same() -> bool:
            return await _books(redis, tokens) == live

        await wait_for(same, 20, "the replayed feed's books to equal the live run's")
        states = [
            f["state"]
            for _, f in await redis.xrange(keys.stream(tokens[0]))
            if f["type"] == "status"
        ]
        assert states[:3] == ["connected", "disconnected", "resubscribed"]  # the drop, again
    finally:
        await _stop(feed)
        await _stop(server)
        await redis.aclose()
        fresh.close()


async def test_serve_answers_ping_and_replays_in_order(tmp_path) -> None:
    """A client gets PONG for PING and, after subscribing, the recorded rx frames in order."""
    from websockets.asyncio.client import connect

    from polybus.replay.serve import ReplayServer
    from polybus.replay.sessions import read_lines

    frames = [x["frame"] for x in read_lines(recording("calm")) if x["kind"] == "rx"]
    server = ReplayServer(recording("calm"), drops=False)
    await server.start()
    try:
        async with connect(server.url) as ws:
            await ws.send("PING")
            assert await asyncio.wait_for(ws.recv(), 5) == "PONG"
            await ws.send('{"type":"market","assets_ids":[]}')
            got = [await asyncio.wait_for(ws.recv(), 5) for _ in frames]
        assert got == frames
        await asyncio.wait_for(server.done.wait(), 5)
    finally:
        await server.stop()


async def test_serve_from_starts_with_a_snapshot_of_the_books_at_that_time(tmp_path) -> None:
    """--from: the first frame is an array of `book`s as they stood; then frames from T on."""
    import orjson
    from websockets.asyncio.client import connect

    from polybus.replay.serve import ReplayServer
    from polybus.replay.sessions import read_lines

    lines = list(read_lines(recording("calm")))
    start = lines[len(lines) // 2]["t"]
    after = [x["frame"] for x in lines if x["kind"] == "rx" and x["t"] >= start]
    server = ReplayServer(recording("calm"), start=start)
    await server.start()
    try:
        async with connect(server.url) as ws:
            await ws.send('{"type":"market","assets_ids":[]}')
            first = orjson.loads(await asyncio.wait_for(ws.recv(), 5))
            got = [await asyncio.wait_for(ws.recv(), 5) for _ in after]
        assert {b["event_type"] for b in first} == {"book"} and len(first) == 4
        assert got == after
    finally:
        await server.stop()
