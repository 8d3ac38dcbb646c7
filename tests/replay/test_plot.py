"""`polybus plot`: the series it draws, and the image it writes."""

from __future__ import annotations

import pytest

from polybus.cli import main
from polybus.replay.plot import series
from polybus.replay.sessions import read_lines
from tests.replay.golden import expected, recording


def _first_token() -> str:
    return next(x["token"] for x in read_lines(expected("faults")) if x["kind"] == "entry")


def test_series_has_tops_trades_and_every_reconnect() -> None:
    """The faults session's token shows its drop, stall and shutdown, and all its trades."""
    token = _first_token()
    s = series(recording("faults"), token[:12])
    assert s.token == token
    assert [reason for _, reason in s.drops] == ["closed:1006", "data_silence", "shutdown"]
    trades = [
        x
        for x in read_lines(expected("faults"))
        if x.get("token") == token and x.get("type") == "trade"
    ]
    assert [p for _, p, _ in s.trades] == [float(x["price"]) for x in trades]
    assert s.tops and all(b is None or a is None or b < a for _, b, a in s.tops)


def test_plot_writes_a_png_and_rejects_unknown_tokens(tmp_path, capsys) -> None:
    """The command writes a PNG; a token not in the file is exit code 2 with a message."""
    pytest.importorskip("matplotlib")
    out = tmp_path / "out.png"
    assert main(["plot", str(recording("faults")), "--token", _first_token(), "-o", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["plot", str(recording("faults")), "--token", "42", "-o", str(out)]) == 2
    assert "none is in the file" in capsys.readouterr().err
