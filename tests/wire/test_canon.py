"""Numbers travel as canonical decimal strings."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given, strategies as st

from wire.canon import canon, canon_or_empty
from wire.errors import DecodeError


@pytest.mark.parametrize(
    ("raw", "want"),
    [(".48", "0.48"), ("0.480", "0.48"), ("0.48", "0.48"), ("1200.0", "1200"), ("1200", "1200"),
     ("0", "0"), ("0.0", "0"), ("000.5", "0.5"), ("1.", "1"), ("1e-3", "0.001"), ("-0", "0"),
     ("2.50E+2", "250"), ("0.0025", "0.0025")],
)
def test_canon_spellings(raw: str, want: str) -> None:
    """Every spelling of a number maps to one canonical string."""
    assert canon(raw) == want


@pytest.mark.parametrize("bad", ["", "abc", "1.2.3", ".", "NaN", "inf", "0x10", "1,5"])
def test_canon_rejects_non_numbers(bad: str) -> None:
    """Anything that is not a finite decimal raises DecodeError."""
    with pytest.raises(DecodeError):
        canon(bad)


def test_canon_or_empty_keeps_missing_values_empty() -> None:
    """None and "" mean the exchange sent nothing, and stay ""."""
    assert canon_or_empty(None) == ""
    assert canon_or_empty("") == ""
    assert canon_or_empty("0.50") == "0.5"


@given(st.decimals(min_value=0, max_value=10**9, places=6, allow_nan=False))
def test_canon_preserves_value_and_is_idempotent(value: Decimal) -> None:
    """canon never changes a number's value, and canon(canon(x)) == canon(x)."""
    text = format(value, "f")
    out = canon(text)
    assert Decimal(out) == value
    assert canon(out) == out
    assert not (("." in out) and out.endswith("0"))
