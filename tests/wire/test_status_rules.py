"""The status rules table (wire/status_rules.py): its invariants and its Lua rendering."""

from __future__ import annotations

from polybus.wire import status_rules
from polybus.wire.events import BOOK_STATUSES, STATUS_STATES


def test_every_kind_from_every_status_has_one_result() -> None:
    """The table covers every entry type and status state from every book status."""
    assert set(status_rules.KINDS) == {
        "book",
        "price_change",
        "trade",
        "tick_size_change",
        "best_bid_ask",
        *(f"status:{s}" for s in STATUS_STATES),
    }
    assert set(status_rules.RULES) == {(k, b) for k in status_rules.KINDS for b in BOOK_STATUSES}


def test_the_invariants_of_docs_wire_md() -> None:
    """A snapshot syncs anything; a drop or failed check makes anything suspect; a new
    connection distrusts a synced or retired book but leaves a pending one pending; data
    entries and the reserved `resynced` change nothing."""
    after = status_rules.after
    assert {after("book", b) for b in BOOK_STATUSES} == {"synced"}
    for kind in ("status:disconnected", "status:suspect"):
        assert {after(kind, b) for b in BOOK_STATUSES} == {"suspect"}
    for kind in ("status:connected", "status:resubscribed"):
        assert [after(kind, b) for b in BOOK_STATUSES] == [
            "pending",
            "suspect",
            "suspect",
            "suspect",
        ]
    assert {after("status:retired", b) for b in BOOK_STATUSES} == {"retired"}
    for kind in ("price_change", "trade", "tick_size_change", "best_bid_ask", "status:resynced"):
        assert [after(kind, b) for b in BOOK_STATUSES] == list(BOOK_STATUSES)


def test_unknown_inputs_read_safely() -> None:
    """A status outside BOOK_STATUSES reads as suspect; an unknown kind changes nothing."""
    assert status_rules.after("status:connected", "weird") == "suspect"
    assert status_rules.after("book", "weird") == "synced"
    assert status_rules.after("status:someday", "synced") == "synced"
    assert status_rules.kind_of("status", "retired") == "status:retired"
    assert status_rules.kind_of("trade") == "trade"


def test_the_lua_rendering_gives_each_status_its_argument() -> None:
    """lua_positions() maps each of BOOK_STATUSES, in order, to consecutive ARGV indexes."""
    assert status_rules.lua_positions(8) == (
        "{['pending'] = 8, ['synced'] = 9, ['suspect'] = 10, ['retired'] = 11}"
    )


def test_compose_folds_a_run_of_entries_from_every_status() -> None:
    """compose() gives, per status before, the status after every kind in order; an empty
    run changes nothing, and only book and status entries are moving types."""
    assert status_rules.compose(()) == status_rules.BOOK_STATUSES
    assert status_rules.compose(("status:connected",)) == (
        "pending",
        "suspect",
        "suspect",
        "suspect",
    )
    assert status_rules.compose(("status:disconnected", "book")) == ("synced",) * 4
    assert status_rules.compose(("book", "status:retired", "status:resynced")) == (("retired",) * 4)
    assert status_rules.MOVING_TYPES == {"book", "status"}
