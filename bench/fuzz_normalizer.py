"""Fuzz the normalizer: a million mutated market-channel frames, seeded and deterministic.

    python bench/fuzz_normalizer.py [--frames 1000000] [--seed 11]

Mutates valid frames of every type (the PROTOCOL.md §7 examples in tests/data/protocol and
generated books, price changes, trades, tick changes, tops, lifecycle events, legacy shapes)
at the JSON level (a field set to a wrong type, a hostile number such as `1e999999999`,
`1e100`, `1_000`, `١٢`, ` 0.5`, price 7, size -5, a megabyte string, nesting 300 or 1000 deep,
a key deleted or given twice) and at the byte level (flipped, cut, non-UTF-8, repeated), and
feeds each to one `Normalizer`. It prints what the issue asks for: escapes (exceptions out of
`feed`, plus `internal_error` quarantines: must be 0), invalid events published (events or
lifecycle events that fail `wire/validate.py`: must be 0), quarantine text Redis could not
store (must be 0), quarantined items, events, and frames/s (all frames, and without the ~1 MB
ones) beside the rate of the same normalizer on the valid frames alone, measured in the same
run. Not a test; exits 1 if any must-be-0 figure is not.
"""

from __future__ import annotations

import argparse
import random
import re
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson

from polybus.feeder.normalize import QUARANTINE_TEXT_MAX, Normalized, Normalizer
from polybus.wire.errors import DecodeError
from polybus.wire.events import MarketEvent
from polybus.wire.validate import check_event, check_market


ROOT = Path(__file__).resolve().parents[1]


M = "0xa4c123b1612dd272d1371c17149d439536b3216fdaeeb975729fae923d5a4fd1"
TOKENS = [
    "70431576231964937843803106892715746780871139131450600661571484047788631532544",
    "95360841637169588127682974065479463901706979127607889470280694904432390648586",
    "53966883548763300579689511546218374706990245415845477294242165803001060798009",
    "12345",
]
FOREIGN = "99999999999999999999"

HOSTILE_NUMBERS = [
    "1e999999999",
    "1e999999",
    "1e100",
    "1e-100",
    "1E+64",
    "1e-7",
    "-5",
    "7",
    "1",
    "0",
    "-0",
    "+0.5",
    "1_000",
    "0.1_5",
    "١٢",
    "٠.٥",
    "０.５",
    " 0.5",
    "0.5 ",
    "\t1",
    "NaN",
    "inf",
    "-inf",
    "0x10",
    "1,5",
    "1.2.3",
    ".",
    "",
    "e5",
    "0.123456789",
    "0." + "1" * 40,
    "9" * 40,
    "0.30000000000000004",
    "1" * 65,
    "0." + "0" * 70 + "1",
    "12345678901234",
    "10001",
    "²",
]
WRONG_TYPES: list[Any] = [
    None,
    True,
    False,
    0,
    -1,
    7,
    0.5,
    1e308,
    5e-324,
    2**63,
    -(2**63),
    [],
    {},
    [1, 2],
    {"price": "0.5"},
    "x",
    "BUY",
    "SELL",
    "book",
]


DEPTHS = [2, 40, 254, 300, 1000]
"""Nesting of hostile values: orjson reads 1024 levels and writes only 255."""


def _deep_marker(depth: int) -> str:
    return f"<deep {depth}>"


def _expand_deep(frame: bytes) -> bytes:
    """Replace the markers orjson could write with the nesting it could not."""
    for depth in DEPTHS:
        marker = orjson.dumps(_deep_marker(depth))
        if marker in frame:
            frame = frame.replace(marker, b"[" * depth + b'"x"' + b"]" * depth)
    return frame


# --- valid base frames ----------------------------------------------------------------------


def _level_list(rng: random.Random, descending: bool) -> list[dict[str, str]]:
    cents = sorted(rng.sample(range(1, 100), rng.randint(0, 12)), reverse=descending)
    return [
        {"price": f"0.{c:02d}", "size": f"{rng.randint(0, 9999)}.{rng.randint(0, 99)}"}
        for c in cents
    ]


def _price(rng: random.Random) -> str:
    return rng.choice(
        [
            f"0.{rng.randint(1, 99):02d}",
            f"0.{rng.randint(1, 9999):04d}",
            f"0.{rng.randint(1, 399) * 25:04d}",
            "0.005",
        ]
    )


def generated(rng: random.Random, i: int) -> dict[str, Any]:
    """One valid frame of a random type, numbers drawn on live-looking grids."""
    token, ts = rng.choice(TOKENS), str(1791201600000 + i)
    kind = rng.randrange(8)
    if kind == 0:
        return {
            "market": M,
            "asset_id": token,
            "timestamp": ts,
            "hash": f"{i:040x}",
            "bids": _level_list(rng, False),
            "asks": _level_list(rng, True),
            "tick_size": rng.choice(["0.01", "0.001", "0.0001", "0.0025", "0.005"]),
            "event_type": "book",
            "last_trade_price": _price(rng),
        }
    if kind == 1:
        return {
            "market": M,
            "timestamp": ts,
            "event_type": "price_change",
            "price_changes": [
                {
                    "asset_id": rng.choice(TOKENS),
                    "price": _price(rng),
                    "size": str(rng.randint(0, 500)),
                    "side": rng.choice(["BUY", "SELL"]),
                    "hash": f"{i:040x}",
                    "best_bid": rng.choice([_price(rng), "0"]),
                    "best_ask": rng.choice([_price(rng), "1"]),
                }
                for _ in range(rng.randint(1, 4))
            ],
        }
    if kind == 2:
        return {
            "asset_id": token,
            "event_type": "price_change",
            "market": M,
            "timestamp": ts,
            "hash": f"{i:040x}",
            "changes": [{"price": _price(rng), "side": "SELL", "size": str(rng.randint(0, 500))}],
        }
    if kind == 3:
        return {
            "market": M,
            "asset_id": token,
            "price": _price(rng),
            "size": "12.5",
            "fee_rate_bps": rng.choice(["0", "10", ""]),
            "side": rng.choice(["BUY", "SELL"]),
            "timestamp": ts,
            "event_type": "last_trade_price",
            "transaction_hash": f"0x{i:064x}",
        }
    if kind == 4:
        return {
            "event_type": "tick_size_change",
            "asset_id": token,
            "market": M,
            "old_tick_size": "0.01",
            "new_tick_size": rng.choice(["0.001", "0.0025", "0.005"]),
            "timestamp": ts,
        }
    if kind == 5:
        return {
            "market": M,
            "asset_id": token,
            "best_bid": _price(rng),
            "best_ask": _price(rng),
            "spread": rng.choice(["0.01", "0.03", "-0.01"]),
            "timestamp": ts,
            "event_type": "best_bid_ask",
        }
    if kind == 6:
        return {
            "id": str(i),
            "question": "Will it?",
            "market": M,
            "slug": "will-it",
            "assets_ids": TOKENS[:2],
            "outcomes": ["Yes", "No"],
            "timestamp": ts,
            "event_type": "new_market",
            "order_price_min_tick_size": "0.01",
        }
    return {
        "id": str(i),
        "market": M,
        "assets_ids": TOKENS[:2],
        "winning_asset_id": TOKENS[0],
        "winning_outcome": "Yes",
        "event_message": None,
        "timestamp": ts,
        "event_type": "market_resolved",
    }


def protocol_frames() -> list[bytes]:
    """The PROTOCOL.md §7 example frames, verbatim."""
    out = []
    for path in sorted((ROOT / "tests" / "data" / "protocol").glob("*.txt")):
        text = path.read_text().strip()
        try:  # one frame, perhaps over several lines (the initial dump) ...
            orjson.loads(text)
            out.append(text.encode())
        except orjson.JSONDecodeError:  # ... or one frame per line
            out += [line.encode() for line in text.splitlines() if line.strip()]
    return out


def valid_frames(rng: random.Random, n: int) -> list[bytes]:
    frames = protocol_frames()
    while len(frames) < n:
        frames.append(orjson.dumps(generated(rng, len(frames))))
    return frames


# --- mutations ------------------------------------------------------------------------------


def _slots(value: Any, out: list[tuple[Any, Any]], depth: int = 0) -> None:
    """Every (container, key) of a parsed frame, to pick one to break."""
    if depth > 6:
        return
    items = value.items() if isinstance(value, dict) else enumerate(value)
    for key, child in items:
        out.append((value, key))
        if isinstance(child, dict | list):
            _slots(child, out, depth + 1)


def hostile_value(rng: random.Random) -> Any:
    roll = rng.random()
    if roll < 0.55:
        return rng.choice(HOSTILE_NUMBERS)
    if roll < 0.85:  # a fresh copy: a later mutation may write into it
        return orjson.loads(orjson.dumps(rng.choice(WRONG_TYPES)))
    if roll < 0.95:
        return _deep_marker(rng.choice(DEPTHS))
    return rng.choice(["\u00e9" * 300, "\U0001f600" * 70, "\x00\x01", "7" * 300])


def mutate_tree(rng: random.Random, frame: bytes) -> bytes:
    value = orjson.loads(frame)
    for _ in range(rng.choice([1, 1, 1, 2, 3])):
        slots: list[tuple[Any, Any]] = []
        _slots(value, slots)
        if not slots:
            return orjson.dumps(hostile_value(rng))
        container, key = rng.choice(slots)
        if isinstance(container, dict) and rng.random() < 0.15:
            del container[key]
        else:
            container[key] = hostile_value(rng)
    if rng.random() < 0.05:
        value = [value] * rng.randint(1, 3)
    return _expand_deep(orjson.dumps(value))


_PAIR = re.compile(rb'"(\w+)":("[^"]*"|[-0-9.eE+]+)')


def duplicate_key(rng: random.Random, frame: bytes) -> bytes:
    """Repeat one key with a hostile value after it: the JSON parser keeps the last."""
    pairs = list(_PAIR.finditer(frame))
    if not pairs:
        return frame
    match = rng.choice(pairs)
    extra = b',"' + match.group(1) + b'":' + orjson.dumps(rng.choice(HOSTILE_NUMBERS))
    return frame[: match.end()] + extra + frame[match.end() :]


def mutate_bytes(rng: random.Random, frame: bytes) -> bytes:
    data = bytearray(frame)
    roll = rng.randrange(6)
    if roll == 0 and data:
        data[rng.randrange(len(data))] = rng.randrange(256)
    elif roll == 1:
        del data[rng.randrange(len(data) + 1) :]
    elif roll == 2:
        at = rng.randrange(len(data) + 1)
        data[at:at] = rng.choice([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\x00", b"\\ud800"])
    elif roll == 3 and data:
        a = rng.randrange(len(data))
        b = min(len(data), a + rng.randint(1, 40))
        data[b:b] = data[a:b] * rng.randint(1, 4)
    elif roll == 4:
        data = bytearray(
            rng.choice(
                [
                    b"PONG",
                    b" PONG\n",
                    b"INVALID OPERATION",
                    b"[]",
                    b"null",
                    b"",
                    b"PING",
                    b"[" * 1100,
                ]
            )
        )
    else:
        data = bytearray(b"[" * 300 + bytes(data) + b"]" * 300)
    return bytes(data)


def megabyte(rng: random.Random, frame: bytes) -> bytes:
    """A 1 MB frame: a huge string field, a huge level list, or a huge array of elements."""
    roll = rng.randrange(3)
    if roll == 0:
        value = orjson.loads(frame)
        if isinstance(value, dict):
            value[rng.choice(["hash", "market", "price", "timestamp", "asset_id"])] = "9" * 2**20
        return orjson.dumps(value)
    if roll == 1:
        levels = [{"price": f"0.{i % 9999 + 1:04d}", "size": "1"} for i in range(40000)]
        return orjson.dumps(
            {
                "event_type": "book",
                "asset_id": TOKENS[0],
                "market": M,
                "bids": levels,
                "asks": [],
                "hash": "h",
                "timestamp": "1",
            }
        )
    return b"[" + b",".join([b"1"] * 500000) + b"]"


Mutation = Callable[[random.Random, bytes], bytes]
MUTATIONS: list[tuple[float, Mutation]] = [
    (0.55, mutate_tree),
    (0.15, duplicate_key),
    (0.2999, mutate_bytes),
    (0.0001, megabyte),
]


def fuzzed(rng: random.Random, bases: list[bytes], n: int) -> Iterator[bytes]:
    weights = [w for w, _ in MUTATIONS]
    funcs = [f for _, f in MUTATIONS]
    for _ in range(n):
        frame = rng.choice(bases)
        if rng.random() < 0.1:
            yield frame  # valid frames in between, as on a real socket
            continue
        yield rng.choices(funcs, weights)[0](rng, frame)


# --- the run --------------------------------------------------------------------------------


def storable(text: object) -> bool:
    """What the outbox can write to the quarantine stream: bounded, encodable text."""
    if not isinstance(text, str) or len(text) > QUARANTINE_TEXT_MAX + 64:
        return False
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def valid_rate(frames: list[bytes]) -> float:
    """Frames/s of the normalizer on valid frames only (the reference for the fuzz rate)."""
    norm = Normalizer(TOKENS)
    start = time.perf_counter()
    for i, frame in enumerate(frames):
        norm.feed(frame, i)
    return len(frames) / (time.perf_counter() - start)


BIG = 2**19
"""Frames at least this long (the megabyte ones) are timed apart: a few of them cost seconds."""


def audit(out: Normalized, frame: bytes, tally: Counter[str], examples: dict[str, bytes]) -> None:
    """Count what one frame gave, and every way it could be unfit for the bus."""
    tally["events"] += len(out.events)
    tally["markets"] += len(out.markets)
    tally["quarantined"] += len(out.quarantine)
    for event in [*out.events, *out.markets]:
        try:
            check_market(event) if isinstance(event, MarketEvent) else check_event(event)
        except DecodeError as exc:
            tally["invalid"] += 1
            examples.setdefault(f"invalid: {exc}"[:80], frame[:200])
    for text, reason in out.quarantine:
        if reason.startswith("internal_error"):
            tally["escapes"] += 1
            examples.setdefault(reason, frame[:200])
        if not storable(text):
            tally["unstorable"] += 1
            examples.setdefault("unstorable quarantine text", frame[:200])


def run(args: argparse.Namespace) -> int:
    rng = random.Random(args.seed)
    bases = valid_frames(rng, 2000)
    reference = valid_rate(bases * 5)
    norm = Normalizer([*TOKENS, "1"])
    tally: Counter[str] = Counter()
    examples: dict[str, bytes] = {}
    spent = {"small": 0.0, "big": 0.0}
    for i, frame in enumerate(fuzzed(rng, bases, args.frames)):
        size = "big" if len(frame) >= BIG else "small"
        tally[size] += 1
        start = time.perf_counter()
        try:
            out = norm.feed(frame, i)
        except Exception as exc:  # what this script exists to find
            tally["escapes"] += 1
            examples.setdefault(f"escape {type(exc).__name__}", frame[:200])
            continue
        finally:
            spent[size] += time.perf_counter() - start
        audit(out, frame, tally, examples)
    report(args, tally, spent, reference, norm)
    for what, frame in examples.items():
        print(f"  e.g. {what}: {frame!r:.160}")
    return 1 if tally["escapes"] or tally["invalid"] or tally["unstorable"] else 0


def report(
    args: argparse.Namespace,
    tally: Counter[str],
    spent: dict[str, float],
    reference: float,
    norm: Normalizer,
) -> None:
    rate = args.frames / sum(spent.values())
    small = tally["small"] / spent["small"]
    print(
        f"frames               {args.frames:>12,}  (seed {args.seed}; {tally['big']} of them ~1 MB)"
    )
    print(f"escapes              {tally['escapes']:>12,}  (must be 0)")
    print(f"invalid published    {tally['invalid']:>12,}  (must be 0)")
    print(f"unstorable quarantine{tally['unstorable']:>12,}  (must be 0)")
    print(f"quarantined items    {tally['quarantined']:>12,}")
    print(f"events               {tally['events']:>12,}  (+ {tally['markets']:,} lifecycle)")
    print(f"frames/s fuzzed      {rate:>12,.0f}  (all frames, feed time only)")
    print(f"frames/s fuzzed <512K{small:>12,.0f}  (the {spent['big']:.1f} s of ~1 MB frames apart)")
    print(f"frames/s valid only  {reference:>12,.0f}  (ratio fuzzed/valid {small / reference:.2f})")
    reasons = Counter({k: v for k, v in norm.counts.items() if k.startswith("quarantine")})
    print("quarantine reasons   " + ", ".join(f"{k[11:]}={v:,}" for k, v in reasons.most_common(8)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=11)
    sys.exit(run(parser.parse_args()))


if __name__ == "__main__":
    main()
