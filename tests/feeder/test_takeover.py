"""The standby buffer and the anchor match a takeover uses to lose no event."""

from __future__ import annotations

from polybus.feeder.takeover import StandbyBuffer, identity
from polybus.wire.events import Book, PriceChange, Status, Trade


T = "123"


def change(ts: str, price: str, size: str, h: str) -> PriceChange:
    return PriceChange(T, ts, "BUY", price, size, "0.5", "0.6", h)


def test_identity_ignores_what_each_feeder_computes_itself() -> None:
    """Two sockets' copies of one change match even when our own top-of-book fields differ."""
    a = change("10", "0.5", "10", "h1")
    b = PriceChange(T, "10", "BUY", "0.5", "10", "0.49", "", "h1")
    assert identity(a) == identity(b)
    assert identity(Status(T, "resynced")) is None
    assert identity(Book(T, "m", "10", (), (), "h", source="rest")) is None


def test_events_after_the_anchor_are_what_the_old_leader_missed() -> None:
    """The old leader wrote up to c2; c3 and the trade came after and are replayed, in order."""
    buf = StandbyBuffer()
    c1, c2, c3 = (change(str(i), "0.5", str(i), h) for i, h in ((1, "a"), (2, "b"), (3, "c")))
    trade = Trade(T, "3", "0.5", "1", "BUY", "0", "0xt")
    for i, event in enumerate([c1, c2, c3, trade]):
        buf.hold(event, 1, 1000 + i)
    held, found = buf.after(T, [Status(T, "failover"), c2, c1])
    assert found and [h.event for h in held] == [c3, trade]


def test_no_anchor_in_the_buffer_replays_nothing() -> None:
    """An event this socket never saw: nothing replayed (the snapshot repairs the book)."""
    buf = StandbyBuffer()
    buf.hold(change("1", "0.5", "1", "a"), 1, 1)
    assert buf.after(T, [change("9", "0.7", "1", "zz")]) == ([], False)
    assert buf.after(T, []) == ([], False)
    assert buf.after("other", [change("1", "0.5", "1", "a")]) == ([], False)


def test_the_newest_identical_event_is_the_anchor() -> None:
    """Two identical events (a level set twice): the later one is where the leader stopped."""
    buf = StandbyBuffer()
    same = change("5", "0.5", "1", "h")
    later = change("6", "0.5", "2", "i")
    for event in (same, same, later):
        buf.hold(event, 1, 1)
    held, found = buf.after(T, [same])
    assert found and [h.event for h in held] == [later]


def test_buffer_is_bounded_by_count_and_age() -> None:
    """Old or excess events are dropped and counted; statuses are never held."""
    buf = StandbyBuffer(per_token=3, horizon_us=1_000)
    for i in range(5):
        buf.hold(change(str(i), "0.5", "1", f"h{i}"), 1, i)
    assert len(buf) == 3 and buf.dropped == 2
    buf.hold(change("99", "0.5", "1", "late"), 1, 10_000)
    assert len(buf) == 1 and buf.dropped == 5
    buf.hold(Status(T, "disconnected"), 1, 10_001)
    assert len(buf) == 1
    assert [h.event.ts for h in buf.take(T)] == ["99"] and len(buf) == 0
