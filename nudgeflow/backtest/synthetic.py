"""Seeded synthetic event workloads for the backtest, the bench and the dev demo.

Two generators, both streaming (bounded memory at any size) and in event-time
order:

* `shop_workload`: shoppers' sessions (signup, login, product views, cart
  adds/removes, checkouts, purchases, message opens, logouts), so the default
  rules all have something to fire on.
* `experiment_workload`: one arming event per user, then a conversion with the
  true rate of the user's variant, so a backtest's uplift and p-value can be
  checked against known truth.
"""

from __future__ import annotations

import gzip
import heapq
import random
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import msgspec

Record = dict[str, Any]

DEFAULT_START_MS = 1_717_372_800_000  # 2024-06-03T00:00:00Z, a Monday
MINUTE_MS = 60_000
HOUR_MS = 60 * MINUTE_MS
DAY_MS = 24 * HOUR_MS

_PRODUCTS: list[tuple[str, str, float]] = [
    (f"p{i:03d}", name, price)
    for i, (name, price) in enumerate(
        [
            ("Trail Running Shoes", 89.0),
            ("Rain Jacket", 129.5),
            ("Wool Socks", 12.0),
            ("Water Bottle", 19.9),
            ("Headlamp", 34.0),
            ("Day Pack", 74.0),
            ("Camping Mug", 9.5),
            ("Merino Base Layer", 65.0),
            ("Trekking Poles", 99.0),
            ("Sun Hat", 24.0),
            ("Gaiters", 39.0),
            ("First Aid Kit", 29.0),
        ]
    )
]
_TIMEZONES = ["UTC", "Europe/Lisbon", "Europe/Berlin", "America/New_York", "Asia/Tokyo"]
_SEGMENTS = ["new", "regular", "loyal"]
_NAMES = ["Ana", "Ben", "Chloe", "Dev", "Eva", "Femi", "Goran", "Hana", "Ivan", "Jia"]


@dataclass(frozen=True, slots=True)
class ShopSpec:
    users: int = 10_000
    events: int = 100_000  # exactly this many records are produced
    start_ms: int = DEFAULT_START_MS
    span_ms: int = DAY_MS
    seed: int = 0
    out_of_order: float = 0.0  # fraction of events whose ts is up to 1 minute early


def user_id(n: int) -> str:
    return f"u{n:07d}"


def _traits(rng: random.Random, uid: str) -> Record:
    return {
        "name": rng.choice(_NAMES),
        "email": f"{uid}@example.com",
        "timezone": rng.choice(_TIMEZONES),
        "segment": rng.choice(_SEGMENTS),
    }


def _session(rng: random.Random, uid: str, start: int, new_user: bool) -> list[tuple[int, Record]]:
    """One visit: (ts, record-without-ids) pairs in time order."""
    out: list[tuple[int, Record]] = []
    t = start

    def emit(type_: str, **extra: Any) -> None:
        nonlocal t
        out.append((t, {"user_id": uid, "type": type_, **extra}))
        t += int(rng.expovariate(1 / 45_000)) + 1_000

    if new_user:
        emit("signup", traits=_traits(rng, uid))
    elif rng.random() < 0.3:
        emit("login", traits={"timezone": rng.choice(_TIMEZONES)})
    if rng.random() < 0.03:
        emit("message_opened", properties={"trigger_id": f"{rng.getrandbits(64):016x}"})
    cart: list[tuple[str, str, float]] = []
    for _ in range(1 + min(int(rng.expovariate(1 / 3)), 12)):
        pid, name, price = rng.choice(_PRODUCTS)
        emit("product_view", properties={"product_id": pid, "product_name": name, "price": price})
        if rng.random() < 0.18:
            qty = 1 + (rng.random() < 0.2)
            cart.append((pid, name, price))
            emit(
                "cart_add",
                properties={
                    "product_id": pid,
                    "product_name": name,
                    "price": price,
                    "quantity": qty,
                    "currency": "USD",
                },
            )
    if cart and rng.random() < 0.15:
        pid, name, price = cart.pop(rng.randrange(len(cart)))
        emit("cart_remove", properties={"product_id": pid, "quantity": 1})
    if cart and rng.random() < 0.55:
        value = round(sum(price for _, _, price in cart), 2)
        emit("checkout_started", properties={"cart_value": value, "currency": "USD"})
        if rng.random() < 0.6:
            emit("purchase", properties={"revenue": value, "currency": "USD"})
    if rng.random() < 0.08:
        emit("logout")
    return out


def shop_workload(spec: ShopSpec) -> Iterator[Record]:
    """Yield `spec.events` shop events for `spec.users` users, in (roughly) ts order."""
    rng = random.Random(spec.seed)
    sessions = max(1, int(spec.events / 5.2))  # ~5.2 events per session
    mean_gap = spec.span_ms / sessions
    seen = bytearray(spec.users)
    pending: list[tuple[int, int, Record]] = []
    seq = 0
    emitted = 0
    t = float(spec.start_ms)
    while emitted < spec.events:
        t += rng.expovariate(1 / mean_gap)
        start = int(t)
        while pending and pending[0][0] <= start and emitted < spec.events:
            ts, n, record = heapq.heappop(pending)
            yield _finish(rng, record, ts, n, spec.out_of_order)
            emitted += 1
        n_user = rng.randrange(spec.users)
        new_user = not seen[n_user]
        seen[n_user] = 1
        for ts, record in _session(rng, user_id(n_user), start, new_user):
            heapq.heappush(pending, (ts, seq, record))
            seq += 1


def _finish(rng: random.Random, record: Record, ts: int, n: int, out_of_order: float) -> Record:
    if out_of_order and rng.random() < out_of_order:
        ts -= rng.randrange(1, MINUTE_MS)
    record["event_id"] = f"e{n}"
    record["ts"] = ts
    return record


def experiment_workload(
    *,
    users: int,
    rates: Mapping[str, float],
    variant_of: Callable[[str], str],
    convert_after_ms: int,
    convert_spread_ms: int = HOUR_MS,
    arm_event: Record | None = None,
    conversion_type: str = "purchase",
    start_ms: int = DEFAULT_START_MS,
    spacing_ms: int = 1_000,
    seed: int = 0,
) -> Iterator[Record]:
    """One arming event per user; a conversion with the true rate of the user's variant.

    The conversion comes `convert_after_ms` (+ up to `convert_spread_ms`) after
    the arming event, so it lands after the rule fired (choose it beyond the
    longest delay/inactivity of any variant) and inside the conversion window.
    """
    rng = random.Random(seed)
    arm = arm_event or {
        "type": "cart_add",
        "properties": {"product_id": "p001", "price": 120.0, "quantity": 1},
    }
    pending: list[tuple[int, int, Record]] = []
    seq = 0
    for i in range(users):
        ts = start_ms + i * spacing_ms
        while pending and pending[0][0] <= ts:
            yield heapq.heappop(pending)[2]
        uid = user_id(i)
        yield {"event_id": f"a{i}", "user_id": uid, "ts": ts, **arm}
        if rng.random() < rates[variant_of(uid)]:
            at = ts + convert_after_ms + rng.randrange(max(1, convert_spread_ms))
            record = {"event_id": f"c{i}", "user_id": uid, "type": conversion_type, "ts": at}
            heapq.heappush(pending, (at, seq, record))
            seq += 1
    while pending:
        yield heapq.heappop(pending)[2]


def write_jsonl(path: Path | str, records: Iterable[Record]) -> int:
    """Write records as JSON lines (gzip when the name ends in .gz); return the count."""
    path = Path(path)
    encoder = msgspec.json.Encoder()
    count = 0
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wb") as out:
        buffer = bytearray()
        for record in records:
            encoder.encode_into(record, buffer, len(buffer))
            buffer += b"\n"
            count += 1
            if len(buffer) > 1 << 20:
                out.write(buffer)
                buffer.clear()
        out.write(buffer)
    return count


@click.command("generate")
@click.option("--out", "out", type=click.Path(dir_okay=False, path_type=Path), required=True)
@click.option("--users", type=int, default=10_000, show_default=True)
@click.option("--events", type=int, default=100_000, show_default=True)
@click.option("--days", type=float, default=1.0, show_default=True, help="time span")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--out-of-order", type=float, default=0.0, show_default=True)
def generate_command(
    out: Path, users: int, events: int, days: float, seed: int, out_of_order: float
) -> None:
    """Write a synthetic shop workload as JSONL (for backtests, benches and demos)."""
    spec = ShopSpec(
        users=users, events=events, span_ms=int(days * DAY_MS), seed=seed, out_of_order=out_of_order
    )
    count = write_jsonl(out, shop_workload(spec))
    click.echo(f"wrote {count} events for up to {users} users to {out}")


if __name__ == "__main__":
    generate_command()
