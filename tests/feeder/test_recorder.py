"""Raw recording: JSON lines of frames and connection events that never block the feed."""

from __future__ import annotations

import asyncio
import gzip
import os
import signal
import sys
import threading
import time
import zlib

import orjson

from polybus.cli import main
from polybus.feeder.recorder import _STOP, Recorder
from polybus.replay.sessions import read_lines
from polybus.simulator import SimConfig, Simulator
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
            ("open", None),
            ("tx", '{"type":"market"}'),
            ("rx", "PONG"),
            ("close", None),
        ]
        assert got[2]["t"] == 123 and got[3]["reason"] == "closed:1006"
        assert rec.written == 4 and rec.dropped == 0
        rec.close()  # again: nothing more happens
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


class HeldFile:
    """The recorder's real file, with writes held until the test lets them through."""

    def __init__(self, real) -> None:
        self.real = real
        self.entered = threading.Event()
        self.release = threading.Event()

    def write(self, data: bytes) -> int:
        self.entered.set()
        assert self.release.wait(20), "the test never released the write"
        return self.real.write(data)

    def flush(self) -> None:
        self.real.flush()

    def close(self) -> None:
        self.real.close()


def wait_until(predicate, timeout: float, what: str) -> None:
    """Poll `predicate` (a thread-side wait_for) until true, or fail after `timeout` s."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.005)


def test_close_racing_late_lines_still_closes_the_file(tmp_path) -> None:
    """Lines landing behind close()'s stop mark do not keep the writer waiting: the file closes."""
    path = tmp_path / "r.jsonl.gz"
    rec = Recorder(path, flush_interval=0.0)
    held = HeldFile(rec._file)
    rec._file = held
    rec.rx(0, 1, "first")
    wait_until(held.entered.is_set, 10, "the writer to be writing")  # busy: the queue piles up
    closer = threading.Thread(target=rec.close)
    closer.start()
    wait_until(lambda: rec._queue.qsize() == 1, 10, "close() to queue its stop mark")
    rec.rx(0, 2, "after close")  # the feed still delivering while close() runs in a thread
    rec._queue.put_nowait(b'{"t":3,"conn":0,"kind":"rx","frame":"raced"}\n')  # passed the check
    assert rec._queue.queue[0] == _STOP  # the stop mark is not the last item of the next batch
    held.release.set()
    closer.join(20)
    assert not closer.is_alive() and not rec._thread.is_alive()
    frames = [x["frame"] for x in lines(path)]  # a complete gzip file: it was closed
    assert frames[0] == "first" and set(frames) <= {"first", "after close", "raced"}
    assert rec.written + rec.dropped == 3


def test_lines_reach_the_disk_within_the_flush_interval(tmp_path) -> None:
    """An open recording is readable (gzip too) a moment after each line: a kill loses little."""
    for name in ("r.jsonl", "r.jsonl.gz"):
        path = tmp_path / name
        rec = Recorder(path, flush_interval=0.2)
        for i in range(100):
            rec.rx(0, i, f"frame {i}")

        def readable(path=path) -> bool:
            data = path.read_bytes()
            if path.suffix == ".gz":
                try:
                    data = gzip.decompress(data)
                except (EOFError, OSError, zlib.error):
                    return False
            return data.count(b"\n") == 100

        wait_until(readable, 10, f"{name} to hold every line while still open")
        rec.rx(0, 100, "more")
        wait_until(lambda path=path: len(list(read_lines(path))) == 101, 10, "a second flush")
        rec.close()
        assert rec.written == 101


async def test_a_sigkilled_feeder_recording_replays_up_to_the_kill(
    redis_server, tmp_path, capsys
) -> None:
    """`polybus feed --record x.jsonl.gz` killed with SIGKILL leaves a file that replays, short of
    the kill by at most a second."""
    sim = Simulator(SimConfig(markets=3, seed=4, rate=20.0))  # slow: a gzip buffer never fills
    await sim.start(host="127.0.0.1", port=0, http_port=0)
    path = tmp_path / "x.jsonl.gz"
    env = {
        **os.environ,
        "POLYBUS_TOKENS": ",".join(sim.engine.tokens()),
        "WS_MARKET_URL": sim.ws_url,
        "REDIS_URL": redis_server.url,
    }
    log = (tmp_path / "feeder.log").open("wb")
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "polybus",
        "feed",
        "--record",
        str(path),
        stdout=log,
        stderr=log,
        env=env,
        cwd=tmp_path,
    )
    try:

        def recorded() -> int:
            try:
                return sum(1 for _ in read_lines(path))
            except Exception:
                return 0

        await wait_for(lambda: recorded() > 60, 30, "the recording to grow", interval=0.1)
        proc.send_signal(signal.SIGKILL)
        killed_us = time.time_ns() // 1000
        await proc.wait()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        log.close()
        await sim.stop()
    got = list(read_lines(path))
    assert got[0]["kind"] == "open" and "close" not in [x["kind"] for x in got]  # no shutdown
    last_rx = max(x["t"] for x in got if x["kind"] == "rx")
    assert killed_us - last_rx < 1_000_000, f"lost {(killed_us - last_rx) / 1e6:.2f}s"
    code = await asyncio.to_thread(
        main, ["replay", str(path), "--redis-url", redis_server.url, "--quiet"]
    )
    assert code == 0
    assert f"replay.done lines={len(got)} " in capsys.readouterr().out
