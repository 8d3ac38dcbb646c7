"""Replay pacing: the recorded clock scaled by --speed, and the progress line."""

from __future__ import annotations

import io

import pytest

from polybus.replay import pacing


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """A wall clock the test moves by hand: `clock[0]` is time.monotonic()."""
    now = [100.0]
    monkeypatch.setattr(pacing.time, "monotonic", lambda: now[0])
    return now


def test_unpaced_is_never_delayed(clock: list[float]) -> None:
    """Speed 0 (`--speed max`) never waits, whatever the recorded times."""
    pacer = pacing.Pacer(0.0)
    assert [pacer.delay(t) for t in (0, 5_000_000, 10_000_000)] == [0.0, 0.0, 0.0]


def test_recorded_gaps_are_scaled_by_speed(clock: list[float]) -> None:
    """At speed 2, a line recorded 3 s after the first is due 1.5 s after the start."""
    pacer = pacing.Pacer(2.0)
    assert pacer.delay(1_000_000) == 0.0  # the first line starts the schedule
    assert pacer.delay(4_000_000) == pytest.approx(1.5)
    clock[0] += 1.0
    assert pacer.delay(4_000_000) == pytest.approx(0.5)
    clock[0] += 2.0
    assert pacer.delay(4_000_000) == 0.0  # late lines go at once, never negative


def test_shift_moves_the_schedule_later(clock: list[float]) -> None:
    """Time spent waiting for a client does not count against the recording."""
    pacer = pacing.Pacer(1.0)
    pacer.delay(0)
    clock[0] += 5.0
    pacer.shift(5.0)
    assert pacer.delay(2_000_000) == pytest.approx(2.0)


def test_progress_line_counts_rate_and_time_left(clock: list[float]) -> None:
    """Unpaced, time left extrapolates from lines done; the line names done/total and rate."""
    out = io.StringIO()
    progress = pacing.Progress(total=100, span_us=0, speed=0.0, stream=out, interval=1.0)
    clock[0] += 10.0
    progress.update(25, 500)
    assert out.getvalue() == (
        "replay 25/100 lines ( 25.0%)  500 entries  50 events/s  left 0:00:30\n"
    )


def test_progress_is_throttled_but_final_always_shows(clock: list[float]) -> None:
    """Updates inside the interval are skipped; the final one is always written."""
    out = io.StringIO()
    progress = pacing.Progress(total=10, span_us=10_000_000, speed=1.0, stream=out, interval=5.0)
    clock[0] += 6.0
    progress.update(1, 1, 1_000_000)
    progress.update(2, 2, 2_000_000)
    progress.update(10, 10, 10_000_000, final=True)
    lines = out.getvalue().splitlines()
    assert len(lines) == 2
    assert lines[0].endswith("left 0:00:09") and lines[1].startswith("replay 10/10 lines (100.0%)")
