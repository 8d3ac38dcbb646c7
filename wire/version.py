"""The installed polybus version, as the feeder reports it in its health hash."""

from __future__ import annotations

from importlib import metadata


__all__ = ["VERSION"]

VERSION = metadata.version("polybus")
