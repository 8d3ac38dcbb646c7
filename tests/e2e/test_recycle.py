"""Make-before-break recycling against the simulator: no book turns suspect, no consumer is
told to stop trusting its books, and a replay of the recording writes the same statuses."""

from __future__ import annotations

from polybus.consumers import MarketFeed
from polybus.replay.rawfold import ListSink, RawFolder
from polybus.replay.sessions import read_lines
from polybus.wire import keys
from polybus.wire.events import Status
from tests.e2e.harness import assert_books_equal_truth, rig
from tests.support import wait_for


async def test_a_recycle_turns_no_book_suspect_and_fires_no_disconnect(
    redis_server, tmp_path
) -> None:
    """Every connection is replaced twice mid-flow; consumers see zero `suspect` entries and
    zero `on_disconnect`, the books stay exact, and replaying the recording drives the
    subscription machine to exactly the statuses the live feeder wrote."""
    record = tmp_path / "recycle.jsonl"
    async with rig(
        redis_server, markets=4, tokens_per_connection=3, recycle_interval=1.5, record=str(record)
    ) as r:
        feed = MarketFeed(redis_server.url)
        disconnects: list[int] = []
        feed.on_disconnect = lambda: disconnects.append(1)
        assert await feed.connect()
        assert await feed.subscribe(r.tokens)
        await wait_for(
            lambda: all(feed.get_order_book(t).status == "synced" for t in r.tokens),
            10,
            "the consumer's books synced",
        )
        first = {c.cid for c in r.feeder.connections}
        await wait_for(
            lambda: (
                r.feeder.ladder_counts().get("recycles", 0) >= 2 * len(first)
                and not any(c.retiring for c in r.feeder.connections)
            ),
            15,
            "every connection recycled twice",
        )
        assert not first & {c.cid for c in r.feeder.connections}
        await assert_books_equal_truth(r)
        assert disconnects == []
        live: dict[str, list[tuple[str, str]]] = {}
        for token in r.tokens:
            entries = await r.redis.xrange(keys.stream(token))
            live[token] = [(f["state"], f["reason"]) for _, f in entries if f["type"] == "status"]
            assert [s for s, _ in live[token]] == ["connected"], live[token]
        await feed.disconnect()
    sink = ListSink()
    folder = RawFolder(sink)
    for line in read_lines(record):
        folder.feed(line)
    replayed: dict[str, list[tuple[str, str]]] = {t: [] for t in r.tokens}
    for _, _, event in sink.items:
        if isinstance(event, Status) and event.asset_id in replayed:
            replayed[event.asset_id].append((event.state, event.reason))
    for token in r.tokens:  # the live run ended with a shutdown the Redis check left out
        assert replayed[token][: len(live[token])] == live[token]
        assert replayed[token][len(live[token]) :] == [("disconnected", "shutdown")]
