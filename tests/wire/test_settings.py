"""Where the bus is (wire/settings.py): one resolution of Redis URL and prefix for everyone."""

from __future__ import annotations

from polybus.wire.settings import DEFAULT_REDIS_URL, bus_target


def test_given_values_win_over_env_and_env_over_defaults() -> None:
    """A flag or argument beats the environment, which beats the defaults."""
    env = {"REDIS_URL": "redis://env:1/0", "POLYBUS_PREFIX": "envp"}
    assert bus_target(env, redis_url="redis://flag:2/0", prefix="flagp").redis_url == (
        "redis://flag:2/0"
    )
    assert bus_target(env, prefix="flagp").prefix == "flagp"
    target = bus_target(env)
    assert (target.redis_url, target.prefix, target.redis_url_given) == (
        "redis://env:1/0",
        "envp",
        True,
    )


def test_nothing_set_gives_the_defaults_and_says_so() -> None:
    """Blank values count as unset; the default URL is marked as nobody's choice."""
    target = bus_target({"REDIS_URL": "  ", "POLYBUS_PREFIX": ""}, redis_url="", prefix=None)
    assert (target.redis_url, target.prefix, target.redis_url_given) == (
        DEFAULT_REDIS_URL,
        "pm",
        False,
    )
