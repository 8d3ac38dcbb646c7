"""Consumer-side settings are read when used, never at import, and follow wire/settings.py."""

from __future__ import annotations

import time

import pytest

from polybus.consumers import MarketData, MarketFeed
from polybus.consumers.groups import GroupReader
from polybus.wire.errors import ConfigError


def test_stale_threshold_is_read_when_asked(monkeypatch) -> None:
    """WS_STALE_DATA_THRESHOLD set after import (as `.env` loading does) still counts."""
    md = MarketData(token_id="1", last_update_time=time.time() - 10)
    monkeypatch.setenv("WS_STALE_DATA_THRESHOLD", "5")
    assert md.is_stale is True
    monkeypatch.setenv("WS_STALE_DATA_THRESHOLD", "60")
    assert md.is_stale is False
    monkeypatch.setenv("WS_STALE_DATA_THRESHOLD", "nan")
    with pytest.raises(ConfigError, match="WS_STALE_DATA_THRESHOLD"):
        _ = md.is_stale


def test_clients_take_url_and_prefix_from_the_environment(monkeypatch) -> None:
    """MarketFeed and GroupReader default to REDIS_URL / POLYBUS_PREFIX, as commands do."""
    monkeypatch.setenv("REDIS_URL", "redis://env.example:7/0")
    monkeypatch.setenv("POLYBUS_PREFIX", "envp")
    feed = MarketFeed()
    assert (feed.url, feed.prefix) == ("redis://env.example:7/0", "envp")
    assert MarketFeed(url="redis://arg:1/0", prefix="argp").prefix == "argp"
    reader = GroupReader(None, "g", "m", ["1"])  # type: ignore[arg-type]
    assert list(reader.streams) == ["envp:stream:{1}"]
    assert list(GroupReader(None, "g", "m", ["1"], prefix="p").streams) == [  # type: ignore[arg-type]
        "p:stream:{1}"
    ]
