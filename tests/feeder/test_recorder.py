"""Raw recording: JSON lines of frames and connection events that never block the feed."""

from __future__ import annotations

import gzip

import orjson

from feeder.recorder import Recorder
from tests.e2e.harness import rig
from tests.support import wait_for


def lines(path) -> list[dict]:
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rb") as f:
        return [orjson.loads(line) for line in f]


def test_lines_are_written_in_order_and_gzip_by_extension(tmp_path) -> None:
    """rx, tx and events come back as written; a .gz path is compressed."""
    for name in ("r.jsonl", "r.jsonl.gz"):
        rec = Recorder(tmp_path / name)
        rec.event(1, "open", url="ws://x", epoch=1)
        rec.tx(1, '{"type":"market"}')
        rec.rx(1, 123, b"PONG")
        rec.event(1, "close", reason="closed:1006", epoch=1)
        rec.close()
        got = lines(tmp_path / name)
        assert [(x["kind"], x.get("frame")) for x in got] == [
            ("open", None), ("tx", '{"type":"market"}'), ("rx", "PONG"), ("close", None)]
        assert got[2]["t"] == 123 and got[3]["reason"] == "closed:1006"
        assert rec.written == 4 and rec.dropped == 0


def test_a_full_queue_drops_and_counts_instead_of_blocking(tmp_path) -> None:
    """With no room left, lines are dropped and counted; the caller never waits."""
    rec = Recorder(tmp_path / "r.jsonl", capacity=1)
    for i in range(2000):
        rec.rx(0, i, "x")
    rec.close()
    assert rec.written + rec.dropped == 2000
    assert rec.dropped > 0


def test_a_failing_file_stops_recording_not_the_caller(tmp_path) -> None:
    """A write error (a full disk) marks the recorder failed; later lines are just counted."""
    rec = Recorder("/dev/full")
    for i in range(50):
        rec.rx(0, i, "x" * 10_000)
    rec.close()
    assert rec.failed
    rec.rx(0, 1, "y")
    assert rec.dropped >= 1


async def test_feeder_records_what_it_receives_and_sends(redis_server, tmp_path) -> None:
    """`--record` captures the subscribe frame, every received frame and the open event."""
    path = tmp_path / "session.jsonl.gz"
    async with rig(redis_server, markets=2, record=str(path)) as r:
        await wait_for(lambda: r.feeder.connections[0].stats.frames > 20, 10, "some frames")
    got = lines(path)
    kinds = [x["kind"] for x in got]
    assert kinds[0] == "open" and "close" in kinds
    sub = orjson.loads(next(x["frame"] for x in got if x["kind"] == "tx"))
    assert sub["type"] == "market" and sorted(sub["assets_ids"]) == sorted(r.tokens)
    rx = [x for x in got if x["kind"] == "rx"]
    assert len(rx) >= 20
    assert orjson.loads(rx[0]["frame"])[0]["event_type"] == "book"
