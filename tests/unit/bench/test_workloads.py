"""Bench workloads: keyed by user id, with event times a live worker accepts."""

from __future__ import annotations

import msgspec

from nudgeflow.bench.workloads import arm_events, shop_events, small_events

NOW = 1_800_000_000_000


def test_shop_events_are_keyed_by_user_and_start_at_the_given_time() -> None:
    pairs = list(shop_events(500, 50, NOW, seed=3))
    assert len(pairs) == 500
    records = [msgspec.json.decode(v) for _, v in pairs]
    assert all(k == r["user_id"].encode() for (k, _), r in zip(pairs, records, strict=True))
    assert len({r["user_id"] for r in records}) <= 50
    assert min(r["ts"] for r in records) >= NOW
    assert max(r["ts"] for r in records) <= NOW + 2 * 3600_000  # within the skew a worker allows
    assert len({r["event_id"] for r in records}) == 500  # none dropped as a duplicate


def test_small_events_give_each_user_one_login() -> None:
    records = [msgspec.json.decode(v) for _, v in small_events(3, NOW)]
    assert [r["user_id"] for r in records] == ["m0000000", "m0000001", "m0000002"]
    assert {r["type"] for r in records} == {"login"}
    assert {r["ts"] for r in records} == {NOW}


def test_arm_events_spread_event_times_evenly() -> None:
    records = [msgspec.json.decode(v) for _, v in arm_events(range(4), "arm", NOW, spread_ms=1000)]
    assert [r["ts"] for r in records] == [NOW, NOW + 250, NOW + 500, NOW + 750]
    assert [r["user_id"] for r in records] == [f"t000000{i}" for i in range(4)]
