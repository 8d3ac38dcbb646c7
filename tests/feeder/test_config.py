"""Feeder configuration: flags over env, validation with clear errors."""

from __future__ import annotations

import pytest

from polybus.feeder.config import FeederConfig
from polybus.wire.errors import ConfigError


T1, T2 = "123", "456"


def test_flags_win_over_env_and_env_over_defaults() -> None:
    """A flag beats its env variable; an env variable beats the default."""
    env = {
        "POLYBUS_TOKENS": f"{T1}, {T2},{T1}",
        "REDIS_URL": "redis://env:1/0",
        "WS_PING_INTERVAL": "5",
        "POLYBUS_PREFIX": "envp",
    }
    config = FeederConfig.from_env(env, redis_url="redis://flag:2/0", prefix=None)
    assert config.tokens == (T1, T2)
    assert config.redis_url == "redis://flag:2/0"
    assert config.prefix == "envp"
    assert config.ping_interval == 5.0
    assert config.pong_timeout == 30.0


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"POLYBUS_TOKENS": "12,abc"}, "decimal digits"),
        ({"WS_SILENCE_TIMEOUT": "10"}, ">= 30"),
        ({"WS_PING_INTERVAL": "soon"}, "not a number"),
        ({"WS_TOKENS_PER_CONNECTION": "900"}, "1..500"),
        ({"WS_MARKET_URL": "http://x"}, "ws:// or wss://"),
        ({"WS_RECONNECT_ATTEMPTS": "-1"}, ">= 0"),
        ({"POLYBUS_PREFIX": "a{b"}, "braces"),
    ],
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

    from polybus.feeder.config import ENV

    text = (Path(__file__).resolve().parents[2] / ".env.example").read_text()
    listed = {
        line.split("=", 1)[0]
        for line in text.splitlines()
        if line and not line.startswith("#") and "=" in line
    }
    assert set(ENV.values()) <= listed
    others = {"POLYBUS_LOG_LEVEL", "POLYBUS_LOG_FORMAT", "WS_STALE_DATA_THRESHOLD"}
    assert listed - set(ENV.values()) <= others


# --- issue 10, item 2: every setting validated, one line, exit 2 -----------------------------
def _env_example_variables() -> list[str]:
    from pathlib import Path

    text = (Path(__file__).resolve().parents[2] / ".env.example").read_text()
    return [
        line.split("=", 1)[0]
        for line in text.splitlines()
        if line and not line.startswith("#") and "=" in line
    ]


def _bad_value(var: str) -> str:
    """The value a variable's own check refuses (KeyError: a variable nobody validates)."""
    from polybus.feeder.config import COMMON_ENV, ENV, bad_example

    if var in COMMON_ENV:
        return COMMON_ENV[var][1]
    field = {v: k for k, v in ENV.items()}[var]
    return bad_example(field)


def _feed_with(
    monkeypatch, capsys, tmp_path, env: dict[str, str], real: bool = False
) -> tuple[int, list[str]]:
    """Run `polybus feed` in-process with only these settings (plus a token and a Redis URL
    that refuses connections, so that a value wrongly accepted fails the run at once)."""
    from polybus.cli import main

    for var in _env_example_variables():
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(tmp_path)  # no .env here
    base = {
        "POLYBUS_TOKENS": "123",
        "REDIS_URL": "redis://127.0.0.1:1/0",
        "WS_MARKET_URL": "ws://127.0.0.1:1/ws/market",
    }
    for var, value in {**base, **env}.items():
        monkeypatch.setenv(var, value)
    if not real:
        monkeypatch.setattr("polybus.feeder.app.Feeder.run", _accepted)
    code = main(["feed"])
    return code, capsys.readouterr().err.splitlines()


async def _accepted(self) -> int:
    """Stands in for the feeder's run loop, so that a value wrongly accepted ends the run
    (exit 99, a failure) instead of feeding forever."""
    return 99


@pytest.mark.parametrize("var", _env_example_variables())
def test_every_variable_of_env_example_refuses_a_bad_value(
    var, monkeypatch, capsys, tmp_path
) -> None:
    """Each variable in .env.example, set to a value its check refuses, makes `polybus feed`
    exit 2 with exactly one line naming the variable (no traceback, nothing started)."""
    code, lines = _feed_with(monkeypatch, capsys, tmp_path, {var: _bad_value(var)})
    assert code == 2
    assert len(lines) == 1, lines
    assert var in lines[0]


@pytest.mark.parametrize(
    ("var", "value", "says"),
    [
        ("WS_PING_INTERVAL", "nan", "finite"),
        ("WS_PING_INTERVAL", "0", "> 0"),
        ("POLYBUS_STREAM_MAXLEN", "-5", ">= 1"),
        ("POLYBUS_STREAM_MAXLEN", "0", ">= 1"),
        ("POLYBUS_OUTBOX_CAPACITY", "0", ">= 1"),
        ("POLYBUS_METRICS_PORT", "99999", "0..65535"),
        ("POLYBUS_HEALTH_INTERVAL", "inf", "finite"),
        ("REDIS_URL", "localhost:6379", "needs a scheme: redis://"),
        ("REDIS_URL", "redis://localhost:abc/0", "cannot be read"),
        ("REDIS_URL", "redis://localhost:6379/x", "database number"),
        ("WS_MARKET_URL", "localhost:8765", "ws:// or wss://"),
    ],
)
def test_reported_bad_values_say_what_is_wrong(
    var, value, says, monkeypatch, capsys, tmp_path
) -> None:
    """The values the issue reproduced are refused with a message saying what is wrong."""
    code, lines = _feed_with(monkeypatch, capsys, tmp_path, {var: value})
    assert code == 2
    assert len(lines) == 1 and var in lines[0] and says in lines[0], lines


def test_a_redis_password_never_appears_in_a_message(monkeypatch, capsys, tmp_path) -> None:
    """A bad REDIS_URL is quoted with its password replaced by ***."""
    code, lines = _feed_with(
        monkeypatch, capsys, tmp_path, {"REDIS_URL": "redis://u:sekret@localhost:abc/0"}
    )
    assert code == 2 and "sekret" not in lines[0] and "***" in lines[0]


def test_a_metrics_port_in_use_exits_2_with_one_line(monkeypatch, capsys, tmp_path) -> None:
    """A metrics port another process holds is a setting that can never work: exit 2, one
    line naming POLYBUS_METRICS_PORT, before Redis is even tried."""
    import socket

    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen(1)
        port = held.getsockname()[1]
        code, lines = _feed_with(
            monkeypatch,
            capsys,
            tmp_path,
            {
                "POLYBUS_METRICS_PORT": str(port),
                "POLYBUS_METRICS_HOST": "127.0.0.1",
                "POLYBUS_LOG_LEVEL": "error",
            },
            real=True,
        )
    assert code == 2
    assert len(lines) == 1 and "POLYBUS_METRICS_PORT" in lines[0], lines


def test_a_new_field_without_a_kind_still_gets_the_finite_check() -> None:
    """Numbers are checked finite whatever their kind: a field another change adds without
    a check helper cannot take nan."""
    with pytest.raises(ConfigError, match="POLYBUS_MIN_VOLUME"):
        FeederConfig(min_volume=float("nan"))
