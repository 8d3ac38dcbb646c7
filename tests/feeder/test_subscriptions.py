"""The subscription machine: statuses, first-book deadlines, the resync ladder, handovers."""

from __future__ import annotations

import orjson

from polybus.feeder.subscriptions import Actions, Subscriptions
from polybus.wire.events import Status


T = 10.0
"""The snapshot timeout of every machine here."""


def frames(actions: Actions) -> list[tuple[str, list[str]]]:
    """(operation or "market", tokens) of each frame."""
    out = []
    for text in actions.frames:
        msg = orjson.loads(text)
        out.append((msg.get("operation") or msg["type"], msg["assets_ids"]))
    return out


def opened(tokens: list[str], **kw: object) -> Subscriptions:
    subs = Subscriptions(tokens, snapshot_timeout=T, **kw)  # type: ignore[arg-type]
    subs.opened(0.0, epoch=1)
    return subs


def test_open_subscribes_everything_in_the_first_frame_and_says_connected() -> None:
    """The first frame is the subscription; owned tokens get `connected`, then `resubscribed`."""
    subs = Subscriptions(["a", "b"], snapshot_timeout=T)
    first = subs.opened(0.0, epoch=1)
    assert frames(first) == [("market", ["a", "b"])]
    assert first.statuses == [
        Status("a", "connected", "epoch 1"),
        Status("b", "connected", "epoch 1"),
    ]
    assert first.subscribed == ["a", "b"]
    closed = subs.closed("closed:1006")
    assert closed.statuses == [
        Status("a", "disconnected", "closed:1006"),
        Status("b", "disconnected", "closed:1006"),
    ]
    again = subs.opened(5.0, epoch=2)
    assert [s.state for s in again.statuses] == ["resubscribed", "resubscribed"]


def test_a_book_in_time_ends_the_wait() -> None:
    """A token whose book arrives before its deadline never climbs the ladder."""
    subs = opened(["a"])
    subs.book_seen("a", 3.0)
    assert subs.due(100.0) == Actions()
    assert subs.synced == {"a"}


def test_a_missing_book_climbs_resubscribe_rest_move() -> None:
    """Each deadline without a book climbs one rung: unsubscribe+subscribe, REST, fresh socket."""
    subs = opened(["a", "b"])
    subs.book_seen("b", 1.0)
    assert subs.due(9.9) == Actions()
    rung1 = subs.due(10.0)
    assert frames(rung1) == [("unsubscribe", ["a"]), ("subscribe", ["a"])]
    assert rung1.statuses == [] and rung1.subscribed == ["a"]
    assert subs.due(19.9) == Actions()
    rung2 = subs.due(20.0)
    assert rung2.rest == ["a"] and rung2.frames == []
    rung3 = subs.due(30.0)
    assert rung3.move == ["a"]
    assert subs.due(1000.0) == Actions()  # the fresh connection takes it from here
    assert +subs.counts == {"ladder.resubscribe": 1, "ladder.rest": 1, "ladder.move": 1}


def test_a_rest_book_syncs_but_the_socket_still_owes_one() -> None:
    """A REST snapshot makes the book synced; without a socket book the token still moves."""
    subs = opened(["a"])
    subs.due(10.0)
    subs.due(20.0)
    subs.book_seen("a", 21.0, source="rest")
    assert "a" in subs.synced
    assert subs.due(30.0).move == ["a"]


def test_a_resync_marks_suspect_and_starts_at_rung_one() -> None:
    """A resync writes `suspect`, unsubscribes before subscribing (a plain re-subscribe of a
    live token is answered NO NEW ASSETS) and goes on to REST if no book comes."""
    subs = opened(["a", "b"])
    subs.book_seen("a", 1.0)
    subs.book_seen("b", 1.0)
    act = subs.resync(["a", "zzz"], "bbo_mismatch", 5.0)
    assert act.statuses == [Status("a", "suspect", "bbo_mismatch")]
    assert frames(act) == [("unsubscribe", ["a"]), ("subscribe", ["a"])]
    assert subs.synced == {"b"}
    assert subs.due(15.0).rest == ["a"]


def test_a_resync_while_closed_only_says_suspect() -> None:
    """With the socket down there is nothing to send: the next open subscribes everything."""
    subs = Subscriptions(["a"], snapshot_timeout=T)
    act = subs.resync(["a"], "redis_lost", 0.0)
    assert act.statuses == [Status("a", "suspect", "redis_lost")] and act.frames == []


def test_dynamic_add_and_remove() -> None:
    """Added tokens are subscribed with `connected`/`subscribe`; removed ones say why."""
    subs = opened(["a"])
    act = subs.add(["a", "b"], 1.0)
    assert frames(act) == [("subscribe", ["b"])]
    assert act.statuses == [Status("b", "connected", "subscribe")]
    gone = subs.remove(["b"], "lease_expired", ttl_ms="5000")
    assert frames(gone) == [("unsubscribe", ["b"])]
    assert gone.statuses == [Status("b", "retired", "lease_expired", ttl_ms="5000")]
    assert subs.tokens == ["a"]
    assert subs.due(100.0).frames == [
        orjson.dumps({"operation": "unsubscribe", "assets_ids": ["a"]}).decode(),
        orjson.dumps(
            {"operation": "subscribe", "assets_ids": ["a"], "custom_feature_enabled": True}
        ).decode(),
    ]


def test_adoption_writes_nothing_and_takes_over_at_the_book() -> None:
    """An adopting connection publishes no status; its first book makes the token its own."""
    subs = Subscriptions([], snapshot_timeout=T, adopting=["a", "b"])
    act = subs.opened(0.0, epoch=7)
    assert frames(act) == [("market", ["a", "b"])] and act.statuses == []
    took = subs.book_seen("a", 1.0)
    assert took.adopted == ["a"]
    assert list(subs.owned) == ["a"] and list(subs.adopting) == ["b"]
    assert subs.closed("closed:1006").statuses == [Status("a", "disconnected", "closed:1006")]


def test_an_adoption_without_a_book_ends_taken_over_and_untrusted() -> None:
    """A recycle must end: after the ladder an adopted token is owned anyway, marked suspect."""
    subs = Subscriptions([], snapshot_timeout=T, adopting=["a"])
    subs.opened(0.0, epoch=1)
    subs.due(10.0)
    assert subs.due(20.0).rest == ["a"]
    end = subs.due(30.0)
    assert end.move == [] and end.gave_up == ["a"] and end.adopted == ["a"]
    assert end.statuses == [Status("a", "suspect", "no_snapshot")]


def test_a_moved_token_is_not_moved_twice() -> None:
    """A token already moved to a fresh socket gives up there rather than moving again."""
    subs = Subscriptions([], snapshot_timeout=T, adopting=["a"], moved=True)
    subs.opened(0.0, epoch=1)
    subs.due(10.0)
    subs.due(20.0)
    subs.book_seen("a", 21.0, source="rest")  # REST vouches: owned, synced, no suspect
    end = subs.due(30.0)
    assert end.move == [] and end.gave_up == ["a"] and end.statuses == []


def test_release_and_claim_hand_tokens_over_quietly() -> None:
    """The old connection releases without a status; a successor can claim what is left."""
    old = opened(["a", "b"])
    rel = old.release(["a", "x"])
    assert frames(rel) == [("unsubscribe", ["a"])] and rel.statuses == []
    new = Subscriptions([], snapshot_timeout=T, adopting=["b"])
    new.opened(0.0, epoch=2)
    assert new.claim(["b"], 1.0) == Actions()
    assert list(new.owned) == ["b"] and not new.adopting
