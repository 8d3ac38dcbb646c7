"""Session files: the two recording formats, reading them, and the time flags.

A *raw* file is what `polybus feed --record FILE` writes (feeder/recorder.py): one JSON object
per line, `{"t": µs, "conn": id, "kind": "rx"|"tx"|"open"|"close", …}`. A *stream* file is
what `polybus record` writes (polybus/streamrec.py): a header line
`{"kind": "header", "format": "polybus-stream", …}`, then per token a `hash` line, then
`entry` lines. Either may be gzip-compressed (`.gz` by extension): one gzip member, or several
concatenated (what a crash-safe recorder writes). Pure apart from the file.
"""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, Literal

import orjson
import structlog

from polybus.feeder.recorder import GzipMembers


__all__ = [
    "STREAM_FORMAT",
    "Format",
    "SessionError",
    "detect_format",
    "open_read",
    "open_write",
    "parse_speed",
    "parse_time",
    "read_lines",
    "summarize",
]

STREAM_FORMAT = "polybus-stream"
"""The `format` of a stream file's header line."""

Format = Literal["raw", "stream"]

_RAW_KINDS = frozenset(("rx", "tx", "open", "close"))

log = structlog.get_logger("polybus.replay.sessions")


class SessionError(Exception):
    """A session file or a time/speed flag that cannot be used (the CLI exits 2)."""


def open_read(path: str | Path) -> IO[bytes]:
    """Open a session file for reading; gzip when the name ends in `.gz`."""
    p = Path(path)
    if not p.is_file():
        raise SessionError(f"no such file: {p}")
    if p.suffix == ".gz":
        return gzip.open(p, "rb")  # type: ignore[return-value]
    return open(p, "rb")  # the caller closes it


def open_write(path: str | Path) -> IO[bytes] | GzipMembers:
    """Open a session file for writing; gzip members (one per flush) when it ends in `.gz`."""
    p = Path(path)
    if p.suffix == ".gz":
        return GzipMembers(p, "wb")
    return open(p, "wb")  # the caller closes it


def read_lines(path: str | Path) -> Iterator[dict[str, Any]]:
    """Every line of a session file as a dict, up to where the file was cut short.

    A recording killed mid-write (a truncated gzip member, a last line without its newline)
    yields its whole lines and logs `session.truncated` once; SessionError names a bad line
    anywhere else, and a file cut before its first whole line.
    """
    count = 0
    with open_read(path) as f:
        try:
            for number, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    value = orjson.loads(line)
                except orjson.JSONDecodeError:
                    if line.endswith(b"\n") or not count:
                        raise SessionError(f"{path}:{number}: not a JSON line") from None
                    _truncated(path, count, "the last line is incomplete")
                    return
                if not isinstance(value, dict):
                    raise SessionError(f"{path}:{number}: not a JSON object")
                count += 1
                yield value
        except (OSError, EOFError, zlib.error) as exc:  # a truncated or corrupt .gz
            if not count:
                raise SessionError(f"{path}: {exc}") from exc
            _truncated(path, count, str(exc))


_warned: set[tuple[str, int]] = set()


def _truncated(path: str | Path, lines: int, why: str) -> None:
    """Say once per file (several passes read it) that it ends early."""
    p = Path(path).resolve()
    mark = (str(p), p.stat().st_size)
    if mark not in _warned:
        _warned.add(mark)
        log.warning(
            "session.truncated",
            path=str(path),
            lines=lines,
            reason=why,
            note="read up to the truncation (a killed recording?)",
        )


def detect_format(path: str | Path) -> Format:
    """`raw` or `stream`, from the first line; SessionError for anything else."""
    for first in read_lines(path):
        if first.get("kind") == "header" and first.get("format") == STREAM_FORMAT:
            return "stream"
        if first.get("kind") in _RAW_KINDS and isinstance(first.get("t"), int):
            return "raw"
        break
    else:
        raise SessionError(f"{path}: empty file")
    raise SessionError(f"{path}: unknown format (neither a raw recording nor a stream file)")


def summarize(path: str | Path, fmt: Format) -> tuple[int, int, int]:
    """(lines that replay, first t µs, last t µs): for progress totals and --from/--to checks."""
    count, first, last = 0, 0, 0
    for line in read_lines(path):
        t = line_time(line, fmt)
        if t is None:
            continue
        count += 1
        first = first or t
        last = max(last, t)
    return count, first, last


def line_time(line: dict[str, Any], fmt: Format) -> int | None:
    """A line's time in µs, or None for lines without one (stream header and hashes)."""
    if fmt == "raw":
        t = line.get("t")
        return t if isinstance(t, int) else None
    if line.get("kind") != "entry":
        return None
    return entry_time(str(line.get("id", "")))


def entry_time(entry_id: str) -> int:
    """The µs time a stream id stands for (its millisecond part)."""
    ms, _, _ = entry_id.partition("-")
    return int(ms) * 1000 if ms.isdigit() else 0


def parse_time(text: str) -> int:
    """--from/--to: Unix seconds, ms or µs (by magnitude), or ISO-8601 (UTC if no zone) → µs."""
    value = text.strip()
    try:
        number = float(value)
    except ValueError:
        number = None
    if number is not None:
        if number < 0:
            raise SessionError(f"time must not be negative: {text!r}")
        if number >= 1e14:
            return int(number)
        if number >= 1e11:
            return int(number * 1000)
        return int(number * 1_000_000)
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise SessionError(
            f"not a time: {text!r} (use Unix seconds, milliseconds, or ISO-8601)"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1_000_000)


def parse_speed(text: str) -> float:
    """--speed: a positive factor of the recorded pace, or `max` (0.0: no pacing at all)."""
    if text.strip().lower() == "max":
        return 0.0
    try:
        speed = float(text)
    except ValueError:
        raise SessionError(f"--speed must be a number or max, got {text!r}") from None
    if not speed > 0:
        raise SessionError(f"--speed must be > 0, got {text!r}")
    return speed
