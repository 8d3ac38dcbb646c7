"""One client connection as the simulated exchange sees it: subscriptions, faults, writes.

Frames are written synchronously and straight to the transport, already framed: one
`transport.write` per batch per connection keeps the simulator fast enough to benchmark a
feeder, and since nothing awaits between generating and writing, a connection's frames are
always in the order the engine produced them.
"""

from __future__ import annotations

import contextlib
import struct
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

import structlog
from websockets.asyncio.server import ServerConnection
from websockets.protocol import State

from polybus.simulator.faults import Faults, Shaper


__all__ = ["SimConnection", "ws_frame"]

log = structlog.get_logger()

MAX_BUFFER = 64 * 2**20
"""A client this far behind is dropped as a slow consumer."""


def ws_frame(payload: bytes) -> bytes:
    """An unmasked, unfragmented RFC 6455 text frame (server → client, no compression)."""
    n = len(payload)
    if n < 126:
        return bytes((0x81, n)) + payload
    if n < 65_536:
        return struct.pack("!BBH", 0x81, 126, n) + payload
    return struct.pack("!BBQ", 0x81, 127, n) + payload


@dataclass(eq=False)
class SimConnection:
    """A live market-channel connection; tests flip `faults` flags and call `drop()`."""

    id: int
    ws: ServerConnection
    faults: Faults
    subscribed: set[str] = field(default_factory=set)
    custom: bool = False
    """`custom_feature_enabled`: best_bid_ask and lifecycle broadcasts."""
    initialized: bool = False
    """The initial `type: market` message has arrived."""
    closed: bool = False
    last_rx: float = field(default_factory=time.monotonic)
    frames_sent: int = 0
    shaper: Shaper = field(init=False)

    def __post_init__(self) -> None:
        self.shaper = Shaper(seed=self.id)

    @property
    def live(self) -> bool:
        return not self.closed and self.ws.protocol.state is State.OPEN

    @property
    def muted(self) -> bool:
        """Gets no market data: stalled, or above the asset ceiling."""
        return self.faults.stall or len(self.subscribed) > self.faults.ceiling

    def write(self, texts: list[bytes]) -> int:
        """Send frame texts now; returns how many were sent (0 if the socket is gone)."""
        if not texts or not self.live:
            return 0
        transport = self.ws.transport
        transport.write(b"".join([ws_frame(t) for t in texts]))
        self.frames_sent += len(texts)
        if transport.get_write_buffer_size() > MAX_BUFFER:
            log.warning(
                "simulator.conn.slow_consumer",
                conn_id=self.id,
                buffered=transport.get_write_buffer_size(),
            )
            self.drop()
        return len(texts)

    def buffered(self) -> int:
        """Bytes written but not yet taken by the client's socket."""
        return 0 if self.closed else self.ws.transport.get_write_buffer_size()

    def drop(self) -> None:
        """Abrupt drop: the TCP connection dies with no close frame (the client sees 1006)."""
        if not self.closed:
            log.info("simulator.conn.drop", conn_id=self.id)
        self.closed = True
        with contextlib.suppress(Exception):
            self.ws.transport.abort()

    def lose(self, tokens: Iterable[str]) -> None:
        """From now on never deliver these tokens here (see `Faults.lost`); subscribed or not,
        re-subscribed or not. Other connections are unaffected."""
        self.faults.lost = self.faults.lost | frozenset(tokens)

    async def send_raw(self, text: str) -> None:
        """Send any text frame (garbage, unknown events) as if from the exchange."""
        self.write([text.encode()])
