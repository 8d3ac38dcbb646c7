"""`polybus replay` / `polybus record` command lines: clear errors (exit 2), working runs."""

from __future__ import annotations

import pytest

from polybus.cli import main
from tests.replay.golden import recording


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["replay", "/nonexistent.jsonl"], "no such file"),
        (["replay", "{calm}", "--from", "yesterday"], "not a time"),
        (["replay", "{calm}", "--speed", "fast"], "--speed must be"),
        (["replay", "{calm}", "--speed", "0"], "--speed must be > 0"),
        (["replay", "{calm}", "--from", "2100-01-01T00:00:00Z"], "after the recording ends"),
        (["replay", "{calm}", "--from", "1800000000", "--to", "1700000000"], "before --from"),
        (["replay", "{other}"], "unknown format"),
        (["replay", "{stream}", "--serve", "0"], "--serve replays raw"),
        (["record", "out.jsonl", "--tokens", "abc"], "token id"),
    ],
)
def test_bad_input_exits_2_with_a_message(args, message, tmp_path, capsys) -> None:
    """Each bad flag or file gives exit code 2 and says what is wrong, with no traceback."""
    other = tmp_path / "other.jsonl"
    other.write_text('{"hello": "world"}\n')
    stream = tmp_path / "stream.jsonl"
    stream.write_text('{"kind":"header","format":"polybus-stream","version":1}\n')
    names = {"{calm}": str(recording("calm")), "{other}": str(other), "{stream}": str(stream)}
    assert main([names.get(a, a) for a in args]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_replay_into_redis_reports_throughput_and_guards_the_prefix(redis_server, capsys) -> None:
    """A replay prints its totals and events/s; a second one into the same prefix is refused."""
    args = ["replay", str(recording("faults")), "--redis-url", redis_server.url, "--quiet"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "replay.done" in out and "prefix=replay" in out and "events_per_s=" in out
    assert main(args) == 2
    assert "already holds" in capsys.readouterr().err
    assert main([*args, "--clear", "--speed", "max"]) == 0


def test_record_cli_writes_a_file_that_replays(redis_server, tmp_path, capsys) -> None:
    """`polybus record --duration` dumps a prefix's books; `polybus replay` takes the file."""
    base = ["--redis-url", redis_server.url]
    assert main(["replay", str(recording("calm")), *base, "--prefix", "pm", "--quiet"]) == 0
    out = tmp_path / "s.jsonl.gz"
    assert main(["record", str(out), *base, "--duration", "0.1"]) == 0
    assert "record.done tokens=4" in capsys.readouterr().out
    assert main(["replay", str(out), *base, "--prefix", "copy", "--quiet"]) == 0
