"""Feeder configuration: one frozen dataclass, built from flags > env > .env > defaults.

`.env` is loaded by the CLI before `from_env` runs, so here env already includes it.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

from wire import keys
from wire.errors import ConfigError, InvalidToken


__all__ = ["ENV", "FeederConfig", "parse_tokens"]

MIN_SILENCE_TIMEOUT = 30.0
"""DESIGN.md §3: quiet markets are normal, so the data-silence deadline is never below 30 s."""

ENV: dict[str, str] = {
    "tokens": "POLYBUS_TOKENS",
    "ws_url": "WS_MARKET_URL",
    "redis_url": "REDIS_URL",
    "prefix": "POLYBUS_PREFIX",
    "feeder_id": "POLYBUS_FEEDER_ID",
    "tokens_per_connection": "WS_TOKENS_PER_CONNECTION",
    "ping_interval": "WS_PING_INTERVAL",
    "pong_timeout": "WS_PONG_TIMEOUT",
    "silence_timeout": "WS_SILENCE_TIMEOUT",
    "recycle_interval": "WS_RECYCLE_INTERVAL",
    "snapshot_timeout": "WS_SNAPSHOT_TIMEOUT",
    "connect_stagger": "WS_CONNECT_STAGGER",
    "reconnect_attempts": "WS_RECONNECT_ATTEMPTS",
    "reconnect_base_delay": "WS_RECONNECT_BASE_DELAY",
    "reconnect_max_delay": "WS_RECONNECT_MAX_DELAY",
    "rate_limit_delay": "WS_RATE_LIMIT_DELAY",
    "stream_maxlen": "POLYBUS_STREAM_MAXLEN",
    "outbox_capacity": "POLYBUS_OUTBOX_CAPACITY",
    "health_interval": "POLYBUS_HEALTH_INTERVAL",
    "health_ttl": "POLYBUS_HEALTH_TTL",
    "stats_interval": "POLYBUS_STATS_INTERVAL",
    "interest_interval": "POLYBUS_INTEREST_INTERVAL",
    "interest_grace": "POLYBUS_INTEREST_GRACE",
    "max_leased_tokens": "POLYBUS_MAX_LEASED_TOKENS",
    "max_lease_s": "POLYBUS_MAX_LEASE_S",
    "retired_ttl": "POLYBUS_RETIRED_TTL",
    "metrics_port": "POLYBUS_METRICS_PORT",
    "metrics_host": "POLYBUS_METRICS_HOST",
    "top": "POLYBUS_TOP",
    "min_volume": "POLYBUS_MIN_VOLUME",
    "gamma_url": "GAMMA_URL",
    "gamma_interval": "POLYBUS_GAMMA_INTERVAL",
    "clob_url": "CLOB_URL",
    "record": "POLYBUS_RECORD",
}
"""Field -> environment variable. `.env.example` lists each of them."""


def parse_tokens(text: str | list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """Comma/space separated token ids, validated, deduplicated, order kept."""
    items = text.replace(",", " ").split() if isinstance(text, str) else list(text)
    seen: dict[str, None] = {}
    for item in items:
        try:
            seen[keys.validate_token(item.strip())] = None
        except InvalidToken as exc:
            raise ConfigError(str(exc)) from exc
    return tuple(seen)


def _default_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


@dataclass(frozen=True, slots=True)
class FeederConfig:
    """Everything the feeder process needs; times in seconds."""

    tokens: tuple[str, ...] = ()
    ws_url: str = "wss://ws-subscriptions-clob.polymarket.com/ws/market"
    redis_url: str = "redis://localhost:6379/0"
    prefix: str = keys.DEFAULT_PREFIX
    feeder_id: str = field(default_factory=_default_id)
    tokens_per_connection: int = 200
    ping_interval: float = 10.0
    pong_timeout: float = 30.0
    silence_timeout: float = 60.0
    recycle_interval: float = 3600.0
    snapshot_timeout: float = 10.0
    connect_stagger: float = 0.25
    reconnect_attempts: int = 0
    reconnect_base_delay: float = 1.0
    reconnect_max_delay: float = 60.0
    rate_limit_delay: float = 30.0
    stream_maxlen: int = 100_000
    outbox_capacity: int = 100_000
    health_interval: float = 2.0
    health_ttl: float = 10.0
    stats_interval: float = 30.0
    interest_interval: float = 2.0
    interest_grace: float = 60.0
    max_leased_tokens: int = 2000
    max_lease_s: float = 3600.0
    retired_ttl: float = 86_400.0
    metrics_port: int = 0
    metrics_host: str = "127.0.0.1"
    top: int = 0
    min_volume: float = 0.0
    gamma_url: str = "https://gamma-api.polymarket.com"
    gamma_interval: float = 60.0
    clob_url: str = "https://clob.polymarket.com"
    record: str = ""

    def __post_init__(self) -> None:
        if not self.prefix or any(c in self.prefix for c in "{} "):
            raise ConfigError(f"prefix must be non-empty without braces or spaces: {self.prefix!r}")
        if not 1 <= self.tokens_per_connection <= 500:
            raise ConfigError("WS_TOKENS_PER_CONNECTION must be 1..500 (the exchange stalls above)")
        for name in ("ping_interval", "pong_timeout", "silence_timeout", "snapshot_timeout",
                     "reconnect_base_delay", "reconnect_max_delay", "health_interval",
                     "health_ttl", "interest_interval", "retired_ttl"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{ENV[name]} must be > 0")
        if self.top < 0:
            raise ConfigError("POLYBUS_TOP must be >= 0 (0 = only the configured tokens)")
        if self.reconnect_attempts < 0:
            raise ConfigError("WS_RECONNECT_ATTEMPTS must be >= 0 (0 = unlimited)")
        if self.health_ttl <= self.health_interval:
            raise ConfigError("POLYBUS_HEALTH_TTL must exceed POLYBUS_HEALTH_INTERVAL")
        if not self.ws_url.startswith(("ws://", "wss://")):
            raise ConfigError(f"WS_MARKET_URL must be ws:// or wss://, got {self.ws_url!r}")
        if self.max_leased_tokens < 0:
            raise ConfigError("POLYBUS_MAX_LEASED_TOKENS must be >= 0 (0 = ignore every lease)")
        if self.max_lease_s <= 0:
            raise ConfigError("POLYBUS_MAX_LEASE_S must be > 0")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **flags: Any) -> FeederConfig:
        """Build from env (flags given as non-None keyword arguments win)."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in fields(cls):
            name = ENV[f.name]
            if flags.get(f.name) is not None:
                values[f.name] = flags[f.name]
            elif env.get(name, "").strip():
                values[f.name] = _convert(f.name, env[name].strip(), f.type)
        if "tokens" in values:
            values["tokens"] = parse_tokens(values["tokens"])
        config = cls(**values)
        if config.silence_timeout < MIN_SILENCE_TIMEOUT:
            raise ConfigError(
                f"WS_SILENCE_TIMEOUT must be >= {MIN_SILENCE_TIMEOUT:g} s: quiet markets are "
                "normal, and a shorter deadline would recycle healthy connections"
            )
        return config

    def with_(self, **changes: Any) -> FeederConfig:
        """A copy with some fields changed (validated again)."""
        return replace(self, **changes)


def _convert(name: str, text: str, kind: Any) -> Any:
    kind = str(kind)
    try:
        if "int" in kind and "str" not in kind:
            return int(text)
        if "float" in kind:
            return float(text)
    except ValueError:
        raise ConfigError(f"{ENV[name]}={text!r} is not a number") from None
    return text
