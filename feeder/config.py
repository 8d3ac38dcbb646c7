"""Feeder configuration: one frozen dataclass, built from flags > env > .env > defaults.

`.env` is loaded by the console face (polybus/cli.py) before `from_env` runs, so here env
already includes it. The Redis URL and prefix defaults are wire/settings.py's, shared with
every command and client.

Every setting is validated here, in one place, when the dataclass is built: each field is
declared with a *kind* helper (`interval`, `limit`, `port`, `url`, …) that carries its check
and an example of a value it refuses (the test drives every variable of `.env.example` with
that example). A field added without a kind still gets the generic check: numbers finite.
Problems are `ConfigError`s with one line naming the variable; `polybus` prints that line and
exits 2, never a traceback.
"""

from __future__ import annotations

import math
import os
import re
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from polybus.wire import keys
from polybus.wire.errors import ConfigError, InvalidToken
from polybus.wire.keys import DEFAULT_PREFIX
from polybus.wire.settings import DEFAULT_REDIS_URL, PREFIX_ENV, REDIS_URL_ENV


__all__ = [
    "COMMON_ENV",
    "ENV",
    "FeederConfig",
    "bad_example",
    "check_common",
    "check_redis_url",
    "parse_tokens",
    "read_tokens_file",
    "redact",
]

MIN_SILENCE_TIMEOUT = 30.0
"""DESIGN.md §3: quiet markets are normal, so the data-silence deadline is never below 30 s."""

ENV: dict[str, str] = {
    "tokens": "POLYBUS_TOKENS",
    "tokens_file": "POLYBUS_TOKENS_FILE",
    "ws_url": "WS_MARKET_URL",
    "redis_url": REDIS_URL_ENV,
    "prefix": PREFIX_ENV,
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
    "partitions": "POLYBUS_PARTITIONS",
    "replicas": "POLYBUS_REPLICAS",
    "lease_ms": "POLYBUS_LEASE_MS",
}
"""Field -> environment variable. `.env.example` lists each of them."""

Check = Callable[[Any], str | None]
"""A field check: the problem with a value (one short phrase), or None when it is fine."""


# --- field kinds: a check plus a value it refuses ------------------------------------------
def _kind(default: Any, check: Check, bad: str, *, factory: bool = False) -> Any:
    meta = {"check": check, "bad": bad}
    if factory:
        return field(default_factory=default, metadata=meta)
    return field(default=default, metadata=meta)


def _number(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return f"must be a number, got {type(value).__name__}"
    if not math.isfinite(value):
        return "must be a finite number"
    return None


def _at_least(low: float, *, strict: bool = False, note: str = "") -> Check:
    def check(value: Any) -> str | None:
        problem = _number(value)
        if problem is None and (value <= low if strict else value < low):
            problem = f"must be {'>' if strict else '>='} {low:g}{note}"
        return problem

    return check


def _between(low: int, high: int, note: str = "") -> Check:
    def check(value: Any) -> str | None:
        problem = _number(value)
        if problem is None and not low <= value <= high:
            problem = f"must be {low}..{high}{note}"
        return problem

    return check


def interval(default: float) -> Any:
    """Seconds something waits or repeats: finite and > 0."""
    return _kind(default, _at_least(0, strict=True), "nan")


def optional_interval(default: float) -> Any:
    """Seconds, where 0 switches the feature off: finite and >= 0."""
    return _kind(default, _at_least(0, note=" (0 = off)"), "-1")


def limit(default: int, low: int = 1) -> Any:
    """A count or capacity: a whole number >= `low`."""
    return _kind(default, _at_least(low), str(low - 1))


def count(default: int, note: str = "") -> Any:
    """A count where 0 has a meaning (off, unlimited): a whole number >= 0."""
    return _kind(default, _at_least(0, note=note), "-1")


def port(default: int) -> Any:
    """A TCP port to listen on, 1..65535, or 0 = off."""
    return _kind(default, _between(0, 65535, " (0 = off)"), "99999")


def url(default: str, schemes: tuple[str, ...]) -> Any:
    """A URL with one of `schemes` and a host."""
    return _kind(default, lambda v: _url_problem(v, schemes), "localhost:6379")


def redis_url(default: str) -> Any:
    """A Redis URL as redis-py reads it (redis://, rediss://, unix://)."""
    return _kind(default, _redis_url_problem, "localhost:6379")


def name(default: Any, *, factory: bool = False) -> Any:
    """An identifier inside key names: non-empty, no spaces, braces or colons."""
    return _kind(default, _name_problem, "a b", factory=factory)


def host(default: str) -> Any:
    """An address to bind: a host name or an IP address."""
    return _kind(default, _host_problem, "no such host!")


def out_path(default: str) -> Any:
    """A file to write ('' = off): its directory must exist."""
    return _kind(default, _out_path_problem, "/nonexistent-polybus-dir/x.jsonl")


def in_path(default: str) -> Any:
    """A file to read ('' = none): it must exist and be readable."""
    return _kind(default, _in_path_problem, "/nonexistent-polybus-dir/tokens.txt")


def _url_problem(value: Any, schemes: tuple[str, ...]) -> str | None:
    parts = urlsplit(str(value))
    if parts.scheme not in schemes:
        want = " or ".join(f"{s}://" for s in schemes)
        return f"must be a {want} URL, e.g. {schemes[0]}://host/path"
    if not parts.hostname:
        return "has no host"
    try:
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        return "has a bad port"
    return None


def _redis_url_problem(value: Any) -> str | None:
    text = str(value)
    scheme = urlsplit(text).scheme
    if scheme not in ("redis", "rediss", "unix"):
        return "needs a scheme: redis://HOST:PORT/DB (rediss:// for TLS, unix:///path.sock)"
    from redis.connection import parse_url

    try:
        parsed: dict[str, Any] = parse_url(text)  # type: ignore[no-untyped-call]
    except (ValueError, TypeError) as exc:
        return f"cannot be read: {exc}"
    if scheme == "unix":
        return None
    if not urlsplit(text).hostname:
        return "has no host: redis://HOST:PORT/DB"
    path = urlsplit(text).path.strip("/")
    db = parsed.get("db", 0)
    if (path and not path.isdigit()) or not isinstance(db, int) or db < 0:
        return "has a bad database number (the path is /DB, e.g. /0)"
    return None


_NAME = re.compile(r"[^\s{}:]{1,200}")
_HOST = re.compile(r"[A-Za-z0-9.:\-\[\]%]{1,255}")


def _name_problem(value: Any) -> str | None:
    if not _NAME.fullmatch(str(value)):
        return "must be 1-200 characters without spaces, braces or colons"
    return None


def _host_problem(value: Any) -> str | None:
    if not _HOST.fullmatch(str(value)):
        return "must be a host name or an IP address"
    return None


def _out_path_problem(value: Any) -> str | None:
    if not value:
        return None
    parent = Path(str(value)).expanduser().parent
    if not parent.is_dir():
        return f"cannot be written: no directory {str(parent)!r}"
    return None


def _in_path_problem(value: Any) -> str | None:
    if value and not os.access(Path(str(value)).expanduser(), os.R_OK):
        return "cannot be read (no such file, or no permission)"
    return None


def _prefix_problem(value: Any) -> str | None:
    if not value or any(c in str(value) for c in "{} "):
        return "must be non-empty without braces or spaces"
    return None


def _tokens_problem(value: Any) -> str | None:
    return None  # parse_tokens validated every id already (with a clearer message)


# --- tokens -------------------------------------------------------------------------------
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


def read_tokens_file(path: str, *, setting: str = "POLYBUS_TOKENS_FILE") -> tuple[str, ...]:
    """Token ids from a file: one per line, `#` starts a comment, blank lines ignored.

    Every bad line is reported with its number (the first few), so a file of 20,000 ids is
    fixed in one pass; ids are deduplicated, order kept.
    """
    try:
        text = Path(path).expanduser().read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{setting}={path!r}: cannot be read: {exc}") from None
    seen: dict[str, None] = {}
    bad: list[str] = []
    for number, line in enumerate(text.splitlines(), 1):
        item = line.split("#", 1)[0].strip()
        if not item:
            continue
        try:
            seen[keys.validate_token(item)] = None
        except InvalidToken:
            bad.append(f"line {number}: {item[:40]!r}")
    if bad:
        more = f" (and {len(bad) - 5} more)" if len(bad) > 5 else ""
        raise ConfigError(
            f"{setting}={path!r}: not token ids (1-100 decimal digits): {'; '.join(bad[:5])}{more}"
        )
    return tuple(seen)


def _default_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


@dataclass(frozen=True, slots=True)
class FeederConfig:
    """Everything the feeder process needs; times in seconds."""

    tokens: tuple[str, ...] = _kind((), _tokens_problem, "12,abc")
    tokens_file: str = in_path("")
    ws_url: str = url("wss://ws-subscriptions-clob.polymarket.com/ws/market", ("ws", "wss"))
    redis_url: str = redis_url(DEFAULT_REDIS_URL)
    prefix: str = _kind(DEFAULT_PREFIX, _prefix_problem, "a{b")
    feeder_id: str = name(_default_id, factory=True)
    tokens_per_connection: int = _kind(
        200, _between(1, 500, " (the exchange stalls above ~500)"), "900"
    )
    ping_interval: float = interval(10.0)
    pong_timeout: float = interval(30.0)
    silence_timeout: float = interval(60.0)
    recycle_interval: float = optional_interval(3600.0)
    snapshot_timeout: float = interval(10.0)
    connect_stagger: float = optional_interval(0.25)
    reconnect_attempts: int = count(0, " (0 = unlimited)")
    reconnect_base_delay: float = interval(1.0)
    reconnect_max_delay: float = interval(60.0)
    rate_limit_delay: float = optional_interval(30.0)
    stream_maxlen: int = limit(100_000)
    outbox_capacity: int = limit(100_000)
    health_interval: float = interval(2.0)
    health_ttl: float = interval(10.0)
    stats_interval: float = interval(30.0)
    interest_interval: float = interval(2.0)
    interest_grace: float = optional_interval(60.0)
    max_leased_tokens: int = count(2000, " (0 = ignore every lease)")
    max_lease_s: float = interval(3600.0)
    retired_ttl: float = interval(86_400.0)
    metrics_port: int = port(0)
    metrics_host: str = host("127.0.0.1")
    top: int = count(0, " (0 = only the configured tokens)")
    min_volume: float = _kind(0.0, _at_least(0), "-1")
    gamma_url: str = url("https://gamma-api.polymarket.com", ("http", "https"))
    gamma_interval: float = interval(60.0)
    clob_url: str = url("https://clob.polymarket.com", ("http", "https"))
    record: str = out_path("")
    partitions: int = _kind(16, _between(1, 1024), "0")
    replicas: int = _kind(2, _between(1, 16), "0")
    lease_ms: int = _kind(3000, _between(200, 600_000, " ms"), "10")

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            check: Check | None = f.metadata.get("check")
            problem = check(value) if check is not None else None
            if problem is None and isinstance(value, float | int):
                problem = _number(value)  # every number finite, kind or not
            if problem is not None:
                raise ConfigError(f"{ENV.get(f.name, f.name)}={_shown(f.name, value)}: {problem}")
        if self.health_ttl <= self.health_interval:
            raise ConfigError("POLYBUS_HEALTH_TTL must exceed POLYBUS_HEALTH_INTERVAL")
        if self.reconnect_max_delay < self.reconnect_base_delay:
            raise ConfigError("WS_RECONNECT_MAX_DELAY must be >= WS_RECONNECT_BASE_DELAY")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **flags: Any) -> FeederConfig:
        """Build from env (flags given as non-None keyword arguments win)."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in fields(cls):
            var = ENV[f.name]
            if flags.get(f.name) is not None:
                values[f.name] = flags[f.name]
            elif env.get(var, "").strip():
                values[f.name] = _convert(f.name, env[var].strip(), f.type)
        if "tokens" in values:
            try:
                values["tokens"] = parse_tokens(values["tokens"])
            except ConfigError as exc:
                raise ConfigError(f"POLYBUS_TOKENS (--tokens): {exc}") from None
        if values.get("tokens_file"):
            if (problem := _in_path_problem(values["tokens_file"])) is not None:
                raise ConfigError(f"{ENV['tokens_file']}={values['tokens_file']!r}: {problem}")
            listed = read_tokens_file(values["tokens_file"])
            values["tokens"] = tuple(dict.fromkeys((*values.get("tokens", ()), *listed)))
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


def bad_example(field_name: str) -> str:
    """A value the field refuses, as env text (the .env.example test uses it)."""
    for f in fields(FeederConfig):
        if f.name == field_name:
            return str(f.metadata.get("bad", "nan"))
    raise KeyError(field_name)


def _shown(field_name: str, value: Any) -> str:
    if field_name == "redis_url":
        return repr(redact(str(value)))
    if field_name == "tokens":
        return f"<{len(value)} ids>"
    return repr(value)


def redact(text: str) -> str:
    """A URL with its password replaced by ***, for messages and logs."""
    try:
        parts = urlsplit(text)
        if parts.password is None:
            return text
        netloc = parts.netloc.rsplit("@", 1)
        user = (parts.username or "") + ":***"
        return urlunsplit(parts._replace(netloc=f"{user}@{netloc[-1]}"))
    except ValueError:
        return text


def _convert(field_name: str, text: str, kind: Any) -> Any:
    kind = str(kind)
    var = ENV[field_name]
    if "int" in kind and "str" not in kind:
        try:
            return int(text)
        except ValueError:
            raise ConfigError(f"{var}={text!r}: is not a whole number") from None
    if "float" in kind:
        try:
            return float(text)
        except ValueError:
            raise ConfigError(f"{var}={text!r}: is not a number") from None
    return text


# --- settings every command reads ---------------------------------------------------------
COMMON_ENV: dict[str, tuple[Check, str]] = {
    "REDIS_URL": (_redis_url_problem, "localhost:6379"),
    "POLYBUS_PREFIX": (_prefix_problem, "a{b"),
    "POLYBUS_LOG_LEVEL": (
        lambda v: (
            None
            if str(v).lower() in ("debug", "info", "warning", "error", "critical")
            else "must be debug, info, warning, error or critical"
        ),
        "loud",
    ),
    "POLYBUS_LOG_FORMAT": (
        lambda v: None if v in ("", "json", "console") else "must be json or console",
        "xml",
    ),
    "WS_STALE_DATA_THRESHOLD": (lambda v: _at_least(0, strict=True)(_float_or(v)), "nan"),
}
"""Variables read outside the feeder's dataclass (by every command, or by consumers), with
their check and a value each refuses: `polybus` checks them before running any command."""


def _float_or(text: Any) -> Any:
    try:
        return float(text)
    except (TypeError, ValueError):
        return text


def check_common(environ: Mapping[str, str], overrides: Mapping[str, str | None]) -> None:
    """Raise ConfigError for the first bad common setting (flags in `overrides` win)."""
    for var, (check, _) in COMMON_ENV.items():
        value = overrides.get(var) or environ.get(var, "").strip()
        if not value:
            continue
        problem = check(value)
        if problem is not None:
            shown = redact(value) if var == "REDIS_URL" else value
            raise ConfigError(f"{var}={shown!r}: {problem}")


def check_redis_url(value: str) -> None:
    """Raise ConfigError when `value` is not a Redis URL redis-py can use."""
    problem = _redis_url_problem(value)
    if problem is not None:
        raise ConfigError(f"REDIS_URL={redact(value)!r}: {problem}")
