"""`polybus book` and `polybus top` given one node of a Redis Cluster: books on every primary."""

from __future__ import annotations

from decimal import Decimal

from polybus.wire import keys
from tests.consumers.test_cli import all_synced, polybus
from tests.e2e.harness import assert_books_equal_truth, rig
from tests.e2e.test_cluster import primary_of
from tests.support import LocalCluster, wait_for


def levels(out: str) -> tuple[list[Decimal], list[Decimal]]:
    """The bid and ask prices `polybus book` printed, in its order."""
    rows = [line.split("|") for line in out.splitlines()[4:]]
    bids = [Decimal(b.split()[1]) for b, _ in rows if b.strip()]
    asks = [Decimal(a.split()[0]) for _, a in rows if a.strip()]
    return bids, asks


async def test_book_shows_a_book_from_each_primary(redis_cluster: LocalCluster) -> None:
    """`book TOKEN --redis-url <one node>` prints the true book, synced and maintained by the
    feeder's lease, for a token served by each of the three primaries."""
    async with rig(redis_cluster, markets=8) as r:
        by_node = primary_of(redis_cluster, r.tokens)
        assert len(by_node) == 3  # tokens on every primary
        await wait_for(lambda: all_synced(r), 10, "synced books")
        await assert_books_equal_truth(r)  # pauses the flow: the books hold still
        for tokens in by_node.values():
            token = tokens[0]
            code, out, err = await polybus(
                "book", token, "--redis-url", redis_cluster.url, "--depth", "50"
            )
            assert code == 0, err
            lines = out.splitlines()
            assert lines[0] == token
            assert "status synced" in lines[1] and "maintained: writer test" in lines[1]
            truth_bids, truth_asks = r.sim.engine.true_book(token)
            assert levels(out) == (
                [Decimal(p) for p, _ in truth_bids],
                [Decimal(p) for p, _ in truth_asks],
            )


async def test_top_once_lists_the_books_of_every_primary(redis_cluster: LocalCluster) -> None:
    """`top --once --redis-url <one node>` finds every book of the cluster (SCAN on each
    primary) and shows each synced and maintained (`ok`)."""
    async with rig(redis_cluster, markets=8) as r:
        assert len(primary_of(redis_cluster, r.tokens)) == 3
        await wait_for(lambda: all_synced(r), 10, "synced books")
        await r.sim.pause()
        node = redis_cluster.primaries()[-1]  # any node will do: here the last primary
        code, out, err = await polybus("top", "--once", "--rows", "50", "--redis-url", node.url)
        assert code == 0, err
        assert f"polybus top — {len(r.tokens)} books" in out
        assert "unmaintained" not in out
        rows = [line for line in out.splitlines() if " synced " in line]
        assert len(rows) == len(r.tokens) == 16
        assert all(" ok " in row for row in rows)


async def test_tail_follows_streams_on_every_primary(redis_cluster: LocalCluster) -> None:
    """`tail` on a cluster: from the start, a token of each primary shows its first entries;
    from now (no --tokens: every stream), new entries keep coming from the feeder's notices."""
    async with rig(redis_cluster, markets=8) as r:
        by_node = primary_of(redis_cluster, r.tokens)
        chosen = [tokens[0] for tokens in by_node.values()]
        await wait_for(lambda: r.feeder.published > 50, 10, "events published")
        await r.sim.pause()
        await wait_for(lambda: all_synced(r), 10, "synced books")
        total = sum([await r.redis.xlen(keys.stream(t)) for t in chosen])
        code, out, err = await polybus(
            "tail", "--redis-url", redis_cluster.url, "--from-start", "--count", str(total),
            "--tokens", ",".join(chosen),
        )  # fmt: skip
        assert code == 0, err
        firsts = [line for line in out.splitlines() if " seq=1 status connected" in line]
        assert len(firsts) == 3 and len(out.splitlines()) == total
        r.sim.resume()
        code, out, err = await polybus("tail", "--redis-url", redis_cluster.url, "--count", "30")
        assert code == 0, err
        lines = out.splitlines()
        assert len(lines) == 30 and not any("seq=1 " in line for line in lines)
