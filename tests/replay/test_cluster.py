"""`polybus replay` and `polybus record` given one node of a Redis Cluster: the same books and
streams as on a single redis-server."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from polybus.cli import main
from polybus.redisio import Client, connect
from polybus.replay.into_redis import replay_into_redis
from polybus.replay.sessions import read_lines
from polybus.replay.streamrec import record_streams
from polybus.wire import keys
from tests.e2e.harness import assert_books_equal_truth, rig
from tests.e2e.test_cluster import primary_of
from tests.replay.golden import NAMES, dump, expected, recording, to_text
from tests.support import LocalCluster, RedisServer, wait_for


async def books(redis: Client, prefix: str, tokens: list[str]) -> dict[str, dict[str, str]]:
    """token -> its book hash under `prefix`."""
    return {t: await redis.hgetall(keys.book(t, prefix)) for t in tokens}  # type: ignore[misc]


async def dumped(url: str, prefix: str) -> str:
    """The golden dump (tests/replay/golden.py) of a prefix, through a client fit for `url`."""
    redis = await connect(url, decode_responses=True)
    try:
        return to_text(await dump(redis, prefix))
    finally:
        await redis.aclose()


@pytest.mark.parametrize("name", NAMES)
def test_golden_session_replays_into_a_cluster_exactly(
    redis_cluster: LocalCluster, redis_server: RedisServer, name: str, capsys
) -> None:
    """`polybus replay --redis-url <one node>` writes each golden session into the cluster
    (its tokens on two primaries) exactly as into a single redis-server: the checked-in output;
    a second replay is refused, and `--clear` (keys of many slots deleted) replays it again."""
    tokens = {x["token"] for x in read_lines(expected(name)) if x["kind"] == "hash"}
    assert len(primary_of(redis_cluster, sorted(tokens))) == 2  # as the recordings fall
    for url in (redis_cluster.url, redis_server.url):
        args = ["replay", str(recording(name)), "--redis-url", url, "--prefix", "pm", "--quiet"]
        assert main(args) == 0
        assert main(args) == 2 and "already holds" in capsys.readouterr().err
        assert main([*args, "--clear"]) == 0
    on_cluster = asyncio.run(dumped(redis_cluster.url, "pm"))
    assert on_cluster == asyncio.run(dumped(redis_server.url, "pm"))
    assert on_cluster == expected(name).read_text()


def test_record_cli_on_a_cluster_writes_a_file_that_replays(
    redis_cluster: LocalCluster, tmp_path, capsys
) -> None:
    """`polybus record --redis-url <one node>` finds every book of the cluster and dumps it;
    the file replays into another prefix of the cluster with the same books."""
    base = ["--redis-url", redis_cluster.url]
    assert main(["replay", str(recording("calm")), *base, "--prefix", "pm", "--quiet"]) == 0
    out = tmp_path / "s.jsonl.gz"
    assert main(["record", str(out), *base, "--duration", "0.1"]) == 0
    assert "record.done tokens=4 entries=0" in capsys.readouterr().out
    assert main(["replay", str(out), *base, "--prefix", "copy", "--quiet"]) == 0

    async def compare() -> None:
        redis = await connect(redis_cluster.url, decode_responses=True)
        try:
            tokens = [x["token"] for x in read_lines(out) if x["kind"] == "hash"]
            pm, copy = await books(redis, "pm", tokens), await books(redis, "copy", tokens)
            for book in (*pm.values(), *copy.values()):
                assert book.pop("last_id")
            assert pm == copy and all(pm.values())
        finally:
            await redis.aclose()

    asyncio.run(compare())


async def test_recording_a_live_cluster_replays_the_same_on_a_single_server(
    redis_cluster: LocalCluster, redis_server: RedisServer, tmp_path
) -> None:
    """Streams recorded from a live feed on a cluster (tokens on every primary, entries
    arriving while it records) replay into the cluster and into a single redis-server with
    the same books and streams, and those books are the live ones."""
    out = tmp_path / "live.jsonl.gz"
    stop = asyncio.Event()
    async with rig(redis_cluster, markets=8) as r:
        assert len(primary_of(redis_cluster, r.tokens)) == 3
        await wait_for(lambda: r.feeder.published > 100, 10, "some events")
        task = asyncio.create_task(record_streams(r.redis, out, r.tokens, stop=stop))
        # counted from when the recording holds every book (its start point), not from when
        # it was asked for: on a loaded machine the books alone can take most of a second
        await wait_for(lambda: _hashes_in(out) == len(r.tokens), 10, "the recording started")
        target = r.feeder.published + 300
        await wait_for(lambda: r.feeder.published >= target, 10, "events while recording")
        await assert_books_equal_truth(r)  # the flow paused, every event in Redis
        stop.set()
        result = await asyncio.wait_for(task, 10)
        assert result.entries >= 200
        recorded = {x["token"] for x in read_lines(out) if x["kind"] == "entry"}
        assert len(primary_of(redis_cluster, sorted(recorded))) == 3
        await replay_into_redis(out, r.redis, prefix="copy")
        live, copy = await books(r.redis, "pm", r.tokens), await books(r.redis, "copy", r.tokens)
    single = redis_server.client()
    try:
        await replay_into_redis(out, single, prefix="copy")
        alike = await books(single, "copy", r.tokens)
        ids = {t: (b.pop("last_id"), copy[t].pop("last_id")) for t, b in alike.items()}
        assert alike == copy  # but stream ids: each server makes its own
        assert all(a and b for a, b in ids.values())
        assert to_text(await dump(single, "copy")) == await dumped(redis_cluster.url, "copy")
    finally:
        await single.aclose()
    skip = ("writer", "lease", "fence")  # the live writer's bookkeeping
    for token in r.tokens:
        assert {k: v for k, v in copy[token].items() if k not in skip} == {
            k: v for k, v in live[token].items() if k not in (*skip, "last_id")
        }


def _hashes_in(path: Path) -> int:
    """How many book hashes a recording in progress holds so far."""
    if not path.exists():
        return 0
    return sum(1 for x in read_lines(path) if x["kind"] == "hash")
