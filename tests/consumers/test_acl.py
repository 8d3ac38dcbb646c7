"""MarketFeed under restrictive ACL users on a private redis-server: optional writes refused
degrade with one on_error each; a NOPERM under a running feed is a clear, reported error."""

from __future__ import annotations

from typing import Any

from polybus.consumers import MarketFeed
from polybus.wire.errors import BusError, ConfigError
from tests.consumers.bus import T1, T2, Bus
from tests.e2e.test_acl_tls import SECRETS, documented_acl
from tests.support import RedisServer, wait_for


FAST: dict[str, Any] = dict(
    block_ms=100, health_interval=0.2, audit_interval=0.2, cursor_interval=0.2, lease_s=0.6
)


def url_of(server: RedisServer, user: str, password: str) -> str:
    return f"redis://{user}:{password}@127.0.0.1:{server.port}/0"


async def test_a_read_only_user_reads_and_reports_each_refused_write_once(
    redis_server: RedisServer,
) -> None:
    """A user with reads only: books sync and flow; the lease and the cursor writes are
    refused, each reported to on_error once however often they are retried."""
    bus = Bus(redis_server.client())
    await bus.book(T1)
    await bus.redis.execute_command(
        "ACL",
        "SETUSER",
        "ro",
        "on",
        ">pw",
        "resetkeys",
        "-@all",
        "%R~pm:*",
        "+ping",
        "+hello",
        "+hgetall",
        "+hget",
        "+exists",
        "+type",
        "+scan",
        "+xread",
        "+xrange",
        "+get",
    )
    feed = MarketFeed(url_of(redis_server, "ro", "pw"), **FAST)
    errors: list[Exception] = []
    sizes: list[str] = []
    feed.on_error = errors.append
    feed.on_price_change = lambda d: sizes.append(d["size"])
    assert await feed.connect() and await feed.subscribe([T1])
    assert feed.get_order_book(T1).status == "synced"
    for i in range(20):  # long enough for several lease renewals and cursor rewrites
        await bus.change(T1, "0.47", str(i + 1))
        await wait_for(lambda n=str(i + 1): n in sizes, 5, f"change {i + 1}")
    await wait_for(lambda: len(errors) >= 2, 5, "both refusals reported")
    await wait_for(lambda: feed._leases._next > 0, 5, "a lease renewal tried")
    for i in range(10):  # and more renewals and rewrites after the reports
        await bus.change(T1, "0.46", str(i + 1))
        await wait_for(lambda n=str(i + 1): sizes.count(n) == 2, 5, f"change {i + 1}")
    assert len(errors) == 2, [str(e) for e in errors]
    assert all(isinstance(e, BusError) and "refused" in str(e) for e in errors)
    assert sorted(str(e).split()[1] for e in errors) == ["cursor", "lease"]
    assert feed.vouching
    await feed.disconnect()
    await bus.redis.aclose()


async def test_a_nopermission_under_a_running_feed_is_reported_not_taken_for_a_lost_server(
    redis_server: RedisServer,
) -> None:
    """The documented strategy user loses XREAD while a feed runs: on_error once (a
    ConfigError saying an ACL denies it), on_disconnect with the book suspect; given back,
    the feed vouches again without another report."""
    bus = Bus(redis_server.client())
    await bus.book(T1)
    await bus.book(T2)
    await bus.redis.execute_command("ACL", "SETUSER", *documented_acl()["polybus-strategy"])
    url = url_of(redis_server, "polybus-strategy", SECRETS["STRATEGY_SECRET"])
    feed = MarketFeed(url, **FAST)
    errors: list[Exception] = []
    seen: list[tuple[str, str]] = []
    feed.on_error = errors.append

    def status() -> str:
        book = feed.get_order_book(T1)
        return book.status if book else "-"

    feed.on_disconnect = lambda: seen.append(("disconnect", status()))
    feed.on_connect = lambda: seen.append(("connect", status()))
    assert await feed.connect() and await feed.subscribe([T1, T2])
    await bus.redis.execute_command("ACL", "SETUSER", "polybus-strategy", "-xread")
    await wait_for(lambda: ("disconnect", "suspect") in seen, 5, "on_disconnect")
    await wait_for(lambda: bool(errors), 5, "on_error")
    await bus.change(T1, "0.41", "9")
    await wait_for(lambda: feed.reloads >= 6, 10, "a few retries")  # they stay quiet
    assert len(errors) == 1 and isinstance(errors[0], ConfigError)
    assert "ACL" in str(errors[0]) and "xread" in str(errors[0])
    await bus.redis.execute_command("ACL", "SETUSER", "polybus-strategy", "+xread")
    await wait_for(lambda: seen[-1] == ("connect", "synced"), 10, "on_connect again")
    assert ("0.41", "9") in [(lv.price_str, lv.size_str) for lv in feed.get_order_book(T1).bids]
    assert len(errors) == 1
    await feed.disconnect()
    await bus.redis.aclose()
