"""`polybus plot FILE --token T -o out.png`: a session at a glance.

Best bid, best ask and mid over time, trades as dots, reconnects marked (a dashed line where
the token's connection dropped). FILE is a raw recording (folded through the real normalizer
and mirror) or a stream file. `--token` may be a unique prefix of the id. Needs matplotlib:
`pip install 'polybus[plot]'`.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from polybus.replay.rawfold import ListSink, RawFolder
from polybus.replay.sessions import SessionError, detect_format, read_lines
from polybus.wire.book import OrderBook
from polybus.wire.codec import decode
from polybus.wire.errors import DecodeError
from polybus.wire.events import Book, Event, PriceChange, Status, Trade


__all__ = ["Series", "register", "render", "run", "series"]


@dataclass
class Series:
    """What the plot shows for one token; times are µs since the epoch."""

    token: str
    tops: list[tuple[int, float | None, float | None]] = field(default_factory=list)
    """(t, best bid, best ask) after every book change."""
    trades: list[tuple[int, float, str]] = field(default_factory=list)
    """(t, price, taker side)."""
    drops: list[tuple[int, str]] = field(default_factory=list)
    """(t, reason) where the token's connection dropped."""


def _timed_events(path: str | Path) -> tuple[list[str], list[tuple[int, Event]], dict[str, Any]]:
    """(tokens seen, (t, event) in order, initial hash fields by token) of either format."""
    if detect_format(path) == "raw":
        sink = ListSink()
        folder = RawFolder(sink)
        for line in read_lines(path):
            folder.feed(line)
        timed = [(t, e) for t, _, e in sink.items]
        return sorted({e.asset_id for _, e in timed}), timed, {}
    hashes: dict[str, Any] = {}
    timed = []
    for line in read_lines(path):
        if line.get("kind") == "hash":
            hashes[str(line["token"])] = line.get("fields") or {}
        elif line.get("kind") == "entry":
            try:
                entry = decode(line["fields"], str(line["token"]), str(line["id"]))
            except (DecodeError, KeyError) as exc:
                raise SessionError(f"bad entry {line.get('id')}: {exc}") from exc
            timed.append((entry.rx, entry.event))
    return sorted(hashes), timed, hashes


def _pick(tokens: list[str], wanted: str) -> str:
    matches = [t for t in tokens if t.startswith(wanted)]
    if len(matches) != 1:
        what = "is in" if not matches else "matches more than one token of"
        raise SessionError(
            f"token {wanted!r}: none {what} the file"
            if not matches
            else f"token {wanted!r} {what} the file"
        )
    return matches[0]


def _float(text: str | None) -> float | None:
    return float(text) if text else None


def series(path: str | Path, token: str) -> Series:
    """Extract the plotted series of `token` (a unique prefix will do)."""
    tokens, timed, hashes = _timed_events(path)
    token = _pick(tokens, token)
    out, book = Series(token), OrderBook(token)
    start = hashes.get(token)
    if start:
        book.replace(
            [(k[4:], v) for k, v in start.items() if k.startswith("bid:")],
            [(k[4:], v) for k, v in start.items() if k.startswith("ask:")],
        )
    for t, event in timed:
        if event.asset_id != token:
            continue
        if isinstance(event, Book | PriceChange):
            book.apply(event)
            out.tops.append((t, _float(book.best_bid), _float(book.best_ask)))
        elif isinstance(event, Trade):
            out.trades.append((t, float(event.price), event.side))
        elif isinstance(event, Status) and event.state == "disconnected":
            out.drops.append((t, event.reason))
    return out


def render(s: Series, out: str | Path, title: str = "") -> None:
    """Draw the series into an image file (format by extension)."""
    # Typed as Any: matplotlib is an optional extra, and mypy must pass without it.
    matplotlib: Any = importlib.import_module("matplotlib")
    matplotlib.use("Agg")
    plt: Any = importlib.import_module("matplotlib.pyplot")

    def when(t: int) -> datetime:
        return datetime.fromtimestamp(t / 1e6, UTC)

    fig, ax = plt.subplots(figsize=(11, 5))
    xs = [when(t) for t, _, _ in s.tops]
    bids = [b for _, b, _ in s.tops]
    asks = [a for _, _, a in s.tops]
    mids = [(b + a) / 2 if b is not None and a is not None else None for _, b, a in s.tops]
    ax.step(xs, bids, where="post", label="best bid", color="tab:green")
    ax.step(xs, asks, where="post", label="best ask", color="tab:red")
    ax.step(xs, mids, where="post", label="mid", color="tab:gray", linestyle=":")
    if s.trades:
        ax.scatter(
            [when(t) for t, _, _ in s.trades],
            [p for _, p, _ in s.trades],
            s=14,
            color=["tab:blue" if side == "BUY" else "tab:orange" for _, _, side in s.trades],
            label="trades (blue buy, orange sell)",
            zorder=3,
        )
    for i, (t, reason) in enumerate(s.drops):
        ax.axvline(
            when(t),
            color="black",
            linestyle="--",
            linewidth=0.8,
            label="reconnect" if i == 0 else None,
        )
        ax.annotate(
            reason,
            (when(t), 1),
            xycoords=("data", "axes fraction"),
            fontsize=7,
            rotation=90,
            va="top",
            ha="right",
        )
    ax.xaxis.set_major_formatter(
        importlib.import_module("matplotlib.dates").DateFormatter("%H:%M:%S")
    )
    ax.set_title(title or f"token {s.token[:12]}…")
    ax.set_xlabel("time (UTC)")
    ax.set_ylabel("price")
    ax.legend(loc="best", fontsize=8)
    fig.autofmt_xdate()
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)


def register(subparsers: Any) -> None:
    """Add the `plot` subcommand."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "plot",
        help="plot a session's best bid/ask, mid, trades and reconnects for one token",
        description=__doc__.splitlines()[0] if __doc__ else None,
    )
    p.add_argument("file", help="a raw recording or a stream file")
    p.add_argument("--token", required=True, help="token id (a unique prefix will do)")
    p.add_argument("-o", "--out", required=True, help="image file, e.g. out.png")
    p.set_defaults(func=run, log_level_default="warning")


async def run(args: argparse.Namespace, stop: asyncio.Event) -> int:
    """Plot; 2 for bad input or a missing matplotlib."""
    try:
        importlib.import_module("matplotlib")
    except ImportError:
        print("polybus plot: needs matplotlib: pip install 'polybus[plot]'", file=sys.stderr)
        return 2
    # Folding a session and drawing are blocking: in a thread, so that a stop signal is heard.
    try:
        s = await asyncio.to_thread(series, args.file, args.token)
    except SessionError as exc:
        print(f"polybus plot: {exc}", file=sys.stderr)
        return 2
    await asyncio.to_thread(render, s, args.out, f"{Path(args.file).name} — token {s.token[:12]}…")
    print(
        f"plot.done token={s.token} changes={len(s.tops)} trades={len(s.trades)} "
        f"reconnects={len(s.drops)} out={args.out}",
        flush=True,
    )
    return 0
