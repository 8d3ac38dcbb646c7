"""The one exception tree of polybus, split by what the caller can do about it.

BusError                    root: catch this to catch anything polybus raises on purpose
├── DecodeError             a frame, entry or number could not be read: skip it and count it
│   └── InvalidToken        a token id that is not a decimal string of 1..100 digits
├── SequenceGap             a consumer saw a seq jump or a trimmed cursor: reload the book
├── UpstreamError           the exchange connection failed: reconnect
│   └── HandshakeRejected   the server refused the WebSocket handshake (e.g. HTTP 429)
├── BackendError            Redis failed: reconnect, resync
│   └── WriteRefused        Redis answered a write with an error (OOM, READONLY, NOPERM):
│                           keep the connection, back off, resync once writes work again
└── ConfigError             bad configuration: exit at startup with the message
"""

from __future__ import annotations


__all__ = [
    "BackendError",
    "BusError",
    "ConfigError",
    "DecodeError",
    "HandshakeRejected",
    "InvalidToken",
    "SequenceGap",
    "UpstreamError",
    "WriteRefused",
]


class BusError(Exception):
    """Root of every exception polybus raises deliberately."""


class DecodeError(BusError, ValueError):
    """Input (a frame, a stream entry, a number) could not be decoded."""


class InvalidToken(DecodeError):
    """A token id that is not a decimal string of 1 to 100 digits."""


class SequenceGap(BusError):
    """A consumer's view of a stream has a hole; the book must be reloaded."""

    def __init__(self, token: str, expected: int, got: int) -> None:
        super().__init__(f"token {token}: expected seq {expected}, got {got}")
        self.token = token
        self.expected = expected
        self.got = got


class UpstreamError(BusError):
    """The exchange connection failed in a way a reconnect may fix."""


class HandshakeRejected(UpstreamError):
    """The server refused the WebSocket handshake with an HTTP status."""

    def __init__(self, status: int, retry_after: float | None = None) -> None:
        super().__init__(f"handshake rejected with HTTP {status}")
        self.status = status
        self.retry_after = retry_after


class BackendError(BusError):
    """Redis failed; the caller reconnects and resyncs."""


class WriteRefused(BackendError):
    """Redis answered a write with an error: the server works but will not take it."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        """The error code Redis gave: OOM, READONLY, NOPERM, …"""


class ConfigError(BusError):
    """Configuration is invalid; the process should exit with this message."""
