"""Logging for entry points only: structlog events, JSON (orjson) off a TTY, console on one.

Libraries never call this; `polybus <command>` does, once, before anything logs.
"""

from __future__ import annotations

import logging
import os
import sys

import orjson
import structlog


__all__ = ["configure_logging"]


def configure_logging(level: str | None = None, fmt: str | None = None) -> None:
    """Configure structlog globally. `fmt` is "json", "console" or None (auto by TTY)."""
    level_name = (level or os.environ.get("POLYBUS_LOG_LEVEL", "info")).upper()
    numeric = logging.getLevelNamesMapping().get(level_name, logging.INFO)
    chosen = fmt or os.environ.get("POLYBUS_LOG_FORMAT") or (
        "console" if sys.stderr.isatty() else "json"
    )
    shared: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    if chosen == "json":
        structlog.configure(
            processors=[*shared, structlog.processors.format_exc_info,
                        structlog.processors.JSONRenderer(serializer=orjson.dumps)],
            wrapper_class=structlog.make_filtering_bound_logger(numeric),
            logger_factory=structlog.BytesLoggerFactory(sys.stderr.buffer),
            cache_logger_on_first_use=False,  # tests reconfigure; nothing logs per message
        )
    else:
        structlog.configure(
            processors=[*shared, structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())],
            wrapper_class=structlog.make_filtering_bound_logger(numeric),
            logger_factory=structlog.PrintLoggerFactory(sys.stderr),
            cache_logger_on_first_use=False,  # tests reconfigure; nothing logs per message
        )
