"""feeder/strands.py: what a cluster's partial failure holds, and what it drops."""

from __future__ import annotations

from polybus.feeder.strands import HOLD_LIMIT, HOLD_S, PROBE_S, Strands


def test_held_entries_go_first_with_their_fence() -> None:
    """A declined step's entries are sent before the token's newer ones, under their fence
    unless the batch brings one."""
    s = Strands()
    assert s.hold("t", ["a", "b"], 3, now=0.0)
    assert s.take("t", ["c"], None) == (["a", "b", "c"], 3)
    assert s.take("t", ["d"], None) == (["d"], None)  # taken once
    assert s.hold("u", ["a"], 3, now=0.0)
    assert s.take("u", ["b"], 4) == (["a", "b"], 4)


def test_a_token_held_too_long_is_stranded() -> None:
    """Held again and again, a token is stranded once its first hold is HOLD_S old: its held
    entries and all later ones are dropped, counted."""
    s = Strands()
    assert s.hold("t", ["a"], None, now=0.0)
    entries, _ = s.take("t", ["b"], None)
    assert s.hold("t", entries, None, now=HOLD_S / 2)  # still the first hold's clock
    entries, _ = s.take("t", ["c"], None)
    assert not s.hold("t", entries, None, now=HOLD_S + 0.1)
    assert s.stranded == {"t"} and s.dropped == 3 and not s.held
    assert s.take("t", ["d"], None) == ([], None) and s.dropped == 4


def test_holding_more_than_the_limit_strands() -> None:
    """Past HOLD_LIMIT entries held in all, the next declined token is stranded instead."""
    s = Strands()
    assert s.hold("t", ["x"] * HOLD_LIMIT, None, now=0.0)
    assert not s.hold("u", ["y"], None, now=0.0)
    assert s.stranded == {"u"} and "t" in s.held


def test_stranded_tokens_are_probed_at_most_every_probe_s_until_one_lands() -> None:
    """Probes come for every stranded token, never twice within PROBE_S; a landed step
    ends the token's strand."""
    s = Strands()
    assert s.probes(0.0) == []
    s.strand("b")
    s.strand("a")
    assert s.probes(10.0) == ["a", "b"]
    assert s.probes(10.0 + PROBE_S / 2) == []
    s.landed("a")
    assert s.probes(10.0 + 2 * PROBE_S) == ["b"]
    assert s.take("a", ["z"], None) == (["z"], None)


def test_clear_forgets_everything() -> None:
    """After a full resync nothing is held or stranded."""
    s = Strands()
    s.hold("t", ["a"], None, now=0.0)
    s.strand("u")
    s.clear()
    assert not s.held and not s.stranded and s.take("u", ["b"], None) == (["b"], None)
