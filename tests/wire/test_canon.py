"""Numbers travel as canonical decimal strings."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given, strategies as st

from polybus.wire.canon import _CACHE, canon, canon_or_empty
from polybus.wire.errors import DecodeError


@pytest.mark.parametrize(
    ("raw", "want"),
    [
        (".48", "0.48"),
        ("0.480", "0.48"),
        ("0.48", "0.48"),
        ("1200.0", "1200"),
        ("1200", "1200"),
        ("0", "0"),
        ("0.0", "0"),
        ("000.5", "0.5"),
        ("1.", "1"),
        ("1e-3", "0.001"),
        ("-0", "0"),
        ("2.50E+2", "250"),
        ("0.0025", "0.0025"),
    ],
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


@pytest.mark.parametrize(
    "bad",
    [
        "1_000",
        "١٢",
        "٠.٥",
        "０.５",
        " 5",
        "5 ",
        "\t1",
        "1\n",
        "²",
        "+-1",
        "1e",
        "e1",
        "1e+",
        "--1",
        "0x1",
        "1e5.5",
    ],
)
def test_canon_is_ascii_only_and_unpadded(bad: str) -> None:
    """Spellings Decimal() would take — underscores, non-ASCII digits, padding — are refused."""
    with pytest.raises(DecodeError):
        canon(bad)


@pytest.mark.parametrize(
    "bad",
    [
        "1e999999999",
        "1e999999",
        "1e100",
        "1e-100",
        "1E+64",
        "-1e63",
        "1e99999999999999999999",
        "0." + "0" * 63 + "1",
    ],
)
def test_canon_refuses_exponent_blow_up_before_expanding(bad: str) -> None:
    """A number whose plain form would pass 64 characters is refused (no Overflow, no 1 MB)."""
    with pytest.raises(DecodeError, match=r"not a decimal|too long"):
        canon(bad)


@pytest.mark.parametrize(
    ("raw", "want"),
    [
        ("1e63", "1" + "0" * 63),
        ("1e-62", "0." + "0" * 61 + "1"),
        ("-1e-5", "-0.00001"),
        ("1e-05", "0.00001"),
        ("1e+16", "10000000000000000"),
        ("12.5e-1", "1.25"),
        ("0.00e5", "0"),
        ("-0.0", "0"),
        ("+7", "7"),
        ("120e-1", "12"),
        ("5E0", "5"),
    ],
)
def test_canon_expands_bounded_exponents_exactly(raw: str, want: str) -> None:
    """Exponent spellings (a JSON float's repr) come out exact and plain, up to 64 characters."""
    assert canon(raw) == want


@pytest.mark.parametrize("bad", [None, 5, 0.5, [1], {"a": 1}, b"1"])
def test_canon_refuses_non_strings_with_decode_error(bad: object) -> None:
    """Whatever the type (an unhashable list too), canon raises DecodeError, nothing else."""
    with pytest.raises(DecodeError):
        canon(bad)  # type: ignore[arg-type]


def test_canon_cache_keeps_only_short_strings() -> None:
    """After hostile input the cache holds no key or value longer than 64 characters."""
    for text in ["1e999999", "9" * 1000, "0.5", "1e63"]:
        try:
            canon(text)
        except DecodeError:
            pass
    assert all(len(k) <= 64 and len(v) <= 64 for k, v in _CACHE.items())


@given(st.decimals(allow_nan=False, allow_infinity=False).filter(lambda d: len(str(d)) <= 64))
def test_canon_agrees_with_decimal_or_refuses(value: Decimal) -> None:
    """Any Decimal spelling is canonicalised to the same value, or refused as too long."""
    text = str(value)  # exponent form for very large or small values
    try:
        out = canon(text)
    except DecodeError:
        assert len(format(value, "f")) > 60
        return
    assert Decimal(out) == value and len(out) <= 64
