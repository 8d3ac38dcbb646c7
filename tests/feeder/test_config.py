"""Feeder configuration: flags over env, validation with clear errors."""

from __future__ import annotations

import pytest

from feeder.config import FeederConfig
from wire.errors import ConfigError


T1, T2 = "123", "456"


def test_flags_win_over_env_and_env_over_defaults() -> None:
    """A flag beats its env variable; an env variable beats the default."""
    env = {"POLYBUS_TOKENS": f"{T1}, {T2},{T1}", "REDIS_URL": "redis://env:1/0",
           "WS_PING_INTERVAL": "5", "POLYBUS_PREFIX": "envp"}
    config = FeederConfig.from_env(env, redis_url="redis://flag:2/0", prefix=None)
    assert config.tokens == (T1, T2)
    assert config.redis_url == "redis://flag:2/0"
    assert config.prefix == "envp"
    assert config.ping_interval == 5.0
    assert config.pong_timeout == 30.0


@pytest.mark.parametrize(
    ("env", "message"),
    [({"POLYBUS_TOKENS": "12,abc"}, "decimal digits"),
     ({"WS_SILENCE_TIMEOUT": "10"}, ">= 30"),
     ({"WS_PING_INTERVAL": "soon"}, "not a number"),
     ({"WS_TOKENS_PER_CONNECTION": "900"}, "1..500"),
     ({"WS_MARKET_URL": "http://x"}, "ws:// or wss://"),
     ({"WS_RECONNECT_ATTEMPTS": "-1"}, ">= 0"),
     ({"POLYBUS_PREFIX": "a{b"}, "braces")],
)
def test_bad_configuration_is_a_clear_config_error(env: dict[str, str], message: str) -> None:
    """Each bad value raises ConfigError naming the variable's problem."""
    with pytest.raises(ConfigError, match=message):
        FeederConfig.from_env(env)


def test_cli_without_tokens_exits_2_with_a_message(capsys, monkeypatch) -> None:
    """`polybus feed` with no tokens says what to do and exits 2."""
    from polybus.cli import main

    monkeypatch.delenv("POLYBUS_TOKENS", raising=False)
    monkeypatch.chdir("/")
    assert main(["feed", "--redis-url", "redis://127.0.0.1:1/0"]) == 2
    assert "--tokens" in capsys.readouterr().err


def test_env_example_lists_every_variable() -> None:
    """.env.example documents every variable the feeder reads, and nothing it does not."""
    from pathlib import Path

    from feeder.config import ENV

    text = (Path(__file__).resolve().parents[2] / ".env.example").read_text()
    listed = {line.split("=", 1)[0] for line in text.splitlines()
              if line and not line.startswith("#") and "=" in line}
    assert set(ENV.values()) <= listed
    others = {"POLYBUS_LOG_LEVEL", "POLYBUS_LOG_FORMAT", "WS_STALE_DATA_THRESHOLD"}
    assert listed - set(ENV.values()) <= others
