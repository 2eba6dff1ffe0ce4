"""Bench event streams: keyed (user id, JSON bytes) pairs with event times near now.

A live worker refuses events older than `max_event_age` or further ahead than
`max_event_skew`, so the backtest's fixed-date shop day is shifted to start at
the wall clock; timers it arms fall due 15 min or more later, i.e. not during
a throughput run.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import msgspec

from nudgeflow.backtest.synthetic import HOUR_MS, ShopSpec, shop_workload

Keyed = tuple[bytes, bytes]

_encode = msgspec.json.Encoder().encode


def keyed(record: dict[str, Any]) -> Keyed:
    return str(record["user_id"]).encode(), _encode(record)


def shop_events(events: int, users: int, start_ms: int, seed: int = 0) -> Iterator[Keyed]:
    """The default rules' shop mix (views, carts, logins, purchases...) over one hour."""
    spec = ShopSpec(users=users, events=events, start_ms=start_ms, span_ms=HOUR_MS, seed=seed)
    for record in shop_workload(spec):
        yield keyed(record)


def small_events(users: int, ts_ms: int, prefix: str = "m") -> Iterator[Keyed]:
    """One small `login` per user: enough to create state (and one armed timer) for each."""
    for n in range(users):
        uid = f"{prefix}{n:07d}"
        yield keyed({"event_id": f"e{n}", "user_id": uid, "type": "login", "ts": ts_ms})


def arm_events(
    users: range, type_: str, ts_ms: int, *, spread_ms: int = 0, prefix: str = "t"
) -> Iterator[Keyed]:
    """One arming event per user; ts spread evenly over `spread_ms` (deadlines follow)."""
    count = max(1, len(users))
    for i, n in enumerate(users):
        uid = f"{prefix}{n:07d}"
        ts = ts_ms + (spread_ms * i) // count
        yield keyed({"event_id": f"a{n}", "user_id": uid, "type": type_, "ts": ts})
