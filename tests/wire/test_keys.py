"""Key names are the fixed contract of DESIGN.md §2."""

from __future__ import annotations

import pytest

from polybus.wire import keys
from polybus.wire.errors import InvalidToken


T = "70431576231964937843803106892715746780871139131450600661571484047788631532544"


def test_key_names_match_the_contract() -> None:
    """Book and stream keys hash-tag the token; the other keys sit under the prefix."""
    assert keys.book(T) == f"pm:book:{{{T}}}"
    assert keys.stream(T, "x") == f"x:stream:{{{T}}}"
    assert keys.markets() == "pm:markets"
    assert keys.feeder("a1") == "pm:feeder:a1"
    assert keys.interest() == "pm:interest"
    assert keys.quarantine() == "pm:quarantine"
    assert keys.consumer("c") == "pm:consumer:c"


def test_token_of_reads_the_hash_tag_back() -> None:
    """token_of is the inverse of book() and stream()."""
    assert keys.token_of(keys.stream(T)) == T
    assert keys.token_of(keys.book(T, "p")) == T


@pytest.mark.parametrize("bad", ["", "12a", "0x12", "1" * 101, " 12", "１２", "-1"])
def test_validate_token_refuses_non_decimal_ids(bad: str) -> None:
    """Only 1..100 ASCII decimal digits are token ids."""
    with pytest.raises(InvalidToken):
        keys.validate_token(bad)


def test_validate_token_accepts_long_decimal_ids() -> None:
    """A 78-digit and a 100-digit id are valid."""
    assert keys.validate_token(T) == T
    assert keys.validate_token("9" * 100) == "9" * 100
