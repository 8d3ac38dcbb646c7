"""Truncated session files (a killed recording): read up to the cut, with a warning."""

from __future__ import annotations

import asyncio
import gzip

import orjson
import pytest

from polybus.cli import main
from polybus.feeder.recorder import GzipMembers
from polybus.replay.plot import series
from polybus.replay.sessions import read_lines
from polybus.replay.streamrec import record_streams
from tests.replay.golden import recording
from tests.support import wait_for


def calm_lines() -> list[bytes]:
    """The calm session's raw lines, each with its newline."""
    return gzip.decompress(recording("calm").read_bytes()).splitlines(keepends=True)


def replay(path, redis_server, capsys) -> tuple[int, str, str]:
    """`polybus replay PATH` into a fresh prefix: (exit code, stdout, stderr)."""
    code = main(["replay", str(path), "--redis-url", redis_server.url, "--quiet", "--clear"])
    out, err = capsys.readouterr()
    return code, out, err


def test_a_single_member_gzip_cut_in_half_replays_what_it_holds(
    redis_server, tmp_path, capsys
) -> None:
    """A .gz without its end (the old recorder killed) replays its whole lines, warning once."""
    data = recording("calm").read_bytes()
    path = tmp_path / "cut.jsonl.gz"
    path.write_bytes(data[: len(data) * 6 // 10])
    code, out, err = replay(path, redis_server, capsys)
    assert code == 0, err
    assert err.count("session.truncated") == 1 and "Traceback" not in err
    got = list(read_lines(path))
    whole = calm_lines()
    assert 0 < len(got) < len(whole)
    assert [x["t"] for x in got] == [eval_t(line) for line in whole[: len(got)]]
    assert f"replay.done lines={len(got)} " in out


def eval_t(line: bytes) -> int:
    """A raw line's time."""
    return int(orjson.loads(line)["t"])


def test_concatenated_members_with_a_cut_last_one_read_to_the_cut(tmp_path) -> None:
    """Complete members are read whole; the cut member adds at most its whole lines."""
    whole = calm_lines()
    path = tmp_path / "members.jsonl.gz"
    with GzipMembers(path) as f:
        for at in range(0, 200, 50):
            f.write(b"".join(whole[at : at + 50]))
            f.flush()
    tail = gzip.compress(b"".join(whole[200:]))
    with path.open("ab") as f:
        f.write(tail[: len(tail) // 2])
    got = list(read_lines(path))
    assert 200 <= len(got) < len(whole)
    assert [x["t"] for x in got] == [eval_t(line) for line in whole[: len(got)]]


def test_a_plain_file_with_a_half_written_last_line(redis_server, tmp_path, capsys) -> None:
    """A .jsonl whose last line has no end replays every line before it."""
    whole = calm_lines()
    path = tmp_path / "cut.jsonl"
    path.write_bytes(b"".join(whole[:100]) + whole[100][:30])
    code, out, err = replay(path, redis_server, capsys)
    assert code == 0, err
    assert "replay.done lines=100 " in out and "session.truncated" in err


@pytest.mark.parametrize("name", ["nothing.jsonl.gz", "nothing.jsonl"])
def test_a_file_cut_before_its_first_line_is_exit_2(name, redis_server, tmp_path, capsys) -> None:
    """Nothing readable at all is an error: exit 2 with a message, no traceback."""
    path = tmp_path / name
    first = calm_lines()[0][:20]
    path.write_bytes(gzip.compress(first)[:15] if name.endswith(".gz") else first)
    code, _, err = replay(path, redis_server, capsys)
    assert code == 2 and "polybus replay:" in err and "Traceback" not in err


def test_plot_reads_a_truncated_recording(tmp_path, capsys) -> None:
    """`polybus plot` of a cut file draws what it holds instead of refusing the file."""
    data = recording("faults").read_bytes()
    path = tmp_path / "cut.jsonl.gz"
    path.write_bytes(data[: len(data) // 2])
    token = next(x for x in read_lines(recording("faults")) if x["kind"] == "tx")
    token_id = orjson.loads(token["frame"])["assets_ids"][0]
    pytest.importorskip("matplotlib")
    out = tmp_path / "cut.png"
    assert main(["plot", str(path), "--token", token_id, "-o", str(out)]) == 0
    assert out.read_bytes()[:4] == b"\x89PNG"
    assert "session.truncated" in capsys.readouterr().err
    assert series(path, token_id).tops


async def test_a_live_stream_recording_is_readable_while_it_runs(redis_server, tmp_path) -> None:
    """`polybus record` into .gz flushes complete members as it goes: readable before it stops."""
    redis = redis_server.client()
    code = await asyncio.to_thread(
        main,
        [
            "replay",
            str(recording("calm")),
            "--redis-url",
            redis_server.url,
            "--prefix",
            "pm",
            "--quiet",
        ],
    )
    assert code == 0
    tokens = sorted([k.split("{")[1].rstrip("}") async for k in redis.scan_iter("pm:book:*")])
    path = tmp_path / "live.jsonl.gz"
    stop = asyncio.Event()
    task = asyncio.create_task(record_streams(redis, path, tokens, stop=stop))

    def kinds() -> list[str]:
        try:
            return [x["kind"] for x in read_lines(path)]
        except Exception:
            return []

    await wait_for(
        lambda: kinds() == ["header", *["hash"] * len(tokens)],
        10,
        "the header and hashes on disk while recording",
    )
    stop.set()
    await task
    await redis.aclose()
