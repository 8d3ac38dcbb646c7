"""A primary's failover seen from a reader: `python bench/cluster_failover.py [--rounds 3]`.

A local Redis Cluster (3 primaries, 3 replicas, `cluster-node-timeout` `--node-timeout-ms`),
the simulator and a feeder with its default timings, all in this process. A reader (a
`RedisCluster` client, like a consumer) polls two tokens every 20 ms — one whose slot the
victim serves, one on another primary — for the newest stream entry and the book's status.
Each round SIGKILLs the primary serving the most tokens, then prints: when the reader saw the
victim's slots answer again and what it got meanwhile (errors by kind), how long no new entry
reached each token's stream (the write stall; entry ids are the server's clock), and whether
the feeder resynced the token (a `suspect` status, then a fresh book) and when. The
killed node is started again (it rejoins as a replica) before the next round. Last, the write
stall of all the healthy primaries' tokens together against the victim's; with
`--full-coverage no` the cluster serves the slots it has while the victim is down. Not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from benchkit import feeder_on_simulator, wait_for
from redis.asyncio.cluster import RedisCluster

from polybus.redisio import REDIS_OR_OS_ERRORS
from polybus.redisproc import LocalCluster
from polybus.wire import keys


@dataclass
class Watch:
    """What the reader saw of one token since the kill (times in s after it)."""

    token: str
    last_id: str = ""
    errors: Counter[str] = field(default_factory=Counter)
    first_answer: float | None = None
    first_entry: float | None = None
    slowest: float = 0.0
    """The longest a read took (redis-py retries inside a call before it raises)."""


def _after(entry_id: str, killed: float) -> float:
    """Seconds from the kill to an entry's id (the writing server's clock, ms)."""
    return int(entry_id.split("-")[0]) / 1000 - killed


async def poll(redis: RedisCluster, w: Watch, since: float, killed: float) -> None:
    """One read of what reached the token's stream since the kill, noted in `w`."""
    began = time.monotonic()
    try:
        entries: Any = await redis.xrange(keys.stream(w.token), min=f"({w.last_id}", count=500)
    except REDIS_OR_OS_ERRORS as exc:
        w.errors[type(exc).__name__] += 1
        return
    finally:
        w.slowest = max(w.slowest, time.monotonic() - began)
    if w.first_answer is None:
        w.first_answer = time.monotonic() - since
    if entries and w.first_entry is None:
        w.first_entry = _after(entries[0][0], killed)


async def stream_after(redis: RedisCluster, w: Watch, killed: float) -> str:
    """What the token's stream shows of the failover: the longest time between two entries
    from its last entry before the kill on, and when it was marked suspect and when its fresh
    snapshot followed (the feeder's resync), if it was."""
    entries: Any = await redis.xrange(keys.stream(w.token), min=f"({w.last_id}", count=5000)
    stamps = [int(w.last_id.split("-")[0])] + [int(i.split("-")[0]) for i, _ in entries]
    gap = max(b - a for a, b in itertools.pairwise(stamps)) / 1000
    suspect = next((n for n, (_, f) in enumerate(entries) if f.get("state") == "suspect"), None)
    if suspect is None:
        return f"longest gap between entries {gap:.2f} s; no resync (nothing was lost)"
    book = next(i for i, f in entries[suspect:] if f["type"] == "book")
    return (
        f"longest gap between entries {gap:.2f} s; suspect at "
        f"{_after(entries[suspect][0], killed):.2f} s, fresh book {_after(book, killed):.2f} s"
    )


async def round_(
    cluster: LocalCluster, tokens: list[str], reader: RedisCluster, coverage: str
) -> None:
    by_node: dict[int, list[str]] = {}
    for t in tokens:
        by_node.setdefault(cluster.node_for(keys.book(t)).port, []).append(t)
    port = max(by_node, key=lambda p: len(by_node[p]))
    other = next(p for p in by_node if p != port)
    watches = [Watch(by_node[port][0]), Watch(by_node[other][0])]
    for w in watches:
        newest: Any = await reader.xrevrange(keys.stream(w.token), count=1)
        w.last_id = newest[0][0]
    victim = next(n for n in cluster.nodes if n.port == port)
    since, killed = time.monotonic(), time.time()
    cluster.kill(victim)
    gone = time.time()  # (kill() asks every node its role first: the victim wrote till here)
    promoted = asyncio.create_task(asyncio.to_thread(cluster.wait_promoted, victim))
    seen: list[float] = []
    promoted.add_done_callback(lambda _: seen.append(time.monotonic() - since))

    async def done() -> bool:
        await asyncio.gather(*(poll(reader, w, since, killed) for w in watches))
        return promoted.done() and all(w.first_entry is not None for w in watches)

    await wait_for(done, 60, "new entries in both streams after the failover")
    await asyncio.sleep(SETTLE)  # let a resync, if any, finish before reading the streams
    print(f"  every node saw the replica promoted at {seen[0]:.2f} s")
    for w, where in zip(watches, ("victim's slots", "another primary"), strict=True):
        print(
            f"  {where:>15}: reader's first answer {w.first_answer or 0:.2f} s (errors "
            + (", ".join(f"{k} x{v}" for k, v in w.errors.items()) or "none")
            + f"; slowest read {w.slowest:.2f} s); first entry written "
            f"{w.first_entry or 0:.2f} s; {await stream_after(reader, w, killed)}"
        )
    marked, since_kill = 0, {}
    for token in tokens:
        since_kill[token] = await reader.xrange(keys.stream(token), min=str(int(killed * 1000)))
        marked += any(f.get("state") == "suspect" for _, f in since_kill[token])
    print(
        f"  {marked} of {len(tokens)} tokens marked suspect and resynced "
        f"({len(by_node[port])} on the victim)"
    )
    print("  " + stalls(since_kill, set(by_node[port]), killed, gone))
    cluster.revive(victim)
    set_coverage(cluster, coverage)  # the revived node starts with the default


def stalls(entries: dict[str, Any], victims: set[str], killed: float, gone: float) -> str:
    """The write stall of the healthy primaries' tokens together (the longest time none of
    them got an entry, from the kill to the victim's first entry after it) and the victim's
    (from the kill to that entry)."""
    kill_ms, gone_ms = int(killed * 1000), int(gone * 1000)
    back = min(_ms(i) for t in victims for i, _ in entries[t] if _ms(i) > gone_ms)
    stamps = sorted(_ms(i) for t, es in entries.items() if t not in victims for i, _ in es)
    points = [kill_ms, *(s for s in stamps if s < back), back]
    healthy = max(b - a for a, b in itertools.pairwise(points))
    return (
        f"write stall: healthy primaries' tokens {healthy / 1000:.2f} s, "
        f"the victim's {(back - kill_ms) / 1000:.2f} s"
    )


def _ms(entry_id: str) -> int:
    return int(entry_id.split("-")[0])


def set_coverage(cluster: LocalCluster, value: str) -> None:
    """`cluster-require-full-coverage` on every live node."""
    for node in cluster.nodes:
        if node.alive:
            with node.sync_client() as r:
                r.config_set("cluster-require-full-coverage", value)


async def run(args: argparse.Namespace) -> None:
    cluster = LocalCluster(node_timeout_ms=args.node_timeout_ms)
    cluster.start()
    set_coverage(cluster, args.full_coverage)
    try:
        async with feeder_on_simulator(cluster, markets=8, rate=300.0, **DEFAULT_TIMINGS) as pair:
            reader = RedisCluster.from_url(cluster.url, decode_responses=True, socket_timeout=1)
            try:
                for i in range(args.rounds):
                    goal = pair.feeder.published + 2000

                    def flowed(goal: int = goal) -> bool:
                        return pair.feeder.published > goal

                    await wait_for(flowed, 30, "2000 more events")
                    print(f"round {i + 1}: SIGKILL of the primary serving the most tokens")
                    await round_(cluster, pair.tokens, reader, args.full_coverage)
            finally:
                await reader.aclose()
    finally:
        cluster.close()


SETTLE = 3.0
"""Seconds after both streams moved again before the streams are read."""

DEFAULT_TIMINGS: dict[str, Any] = {"reconnect_base_delay": 1.0, "reconnect_max_delay": 60.0}
"""The feeder's own defaults for its exchange side (benchkit's FAST shortens them); its Redis
recovery has its own backoff (0.2 s doubling to 5 s) whatever the config."""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--node-timeout-ms", type=int, default=1000)
    parser.add_argument(
        "--full-coverage",
        choices=("yes", "no"),
        default="yes",
        help="cluster-require-full-coverage: with no, the other primaries serve on meanwhile",
    )
    asyncio.run(run(parser.parse_args()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
