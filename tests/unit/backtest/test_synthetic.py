"""The synthetic workloads: exact sizes, time order, seeded determinism."""

from __future__ import annotations

import gzip
import itertools
import json
from collections import Counter
from pathlib import Path

from nudgeflow.backtest.synthetic import (
    ShopSpec,
    experiment_workload,
    shop_workload,
    write_jsonl,
)

SHOP_TYPES = {
    "signup",
    "login",
    "logout",
    "product_view",
    "cart_add",
    "cart_remove",
    "checkout_started",
    "purchase",
    "message_opened",
}


def test_shop_workload_size_order_and_mix() -> None:
    records = list(shop_workload(ShopSpec(users=200, events=5_000, seed=3)))
    assert len(records) == 5_000
    stamps = [r["ts"] for r in records]
    assert stamps == sorted(stamps)
    types = Counter(r["type"] for r in records)
    assert set(types) <= SHOP_TYPES
    assert {"signup", "product_view", "cart_add", "purchase"} <= set(types)
    assert types["product_view"] > types["cart_add"] > types["purchase"]
    assert len({r["event_id"] for r in records}) == 5_000
    assert len({r["user_id"] for r in records}) <= 200
    first_seen: dict[str, str] = {}
    for r in records:
        first_seen.setdefault(r["user_id"], r["type"])
    assert set(first_seen.values()) == {"signup"}


def test_shop_workload_is_seeded() -> None:
    a = list(shop_workload(ShopSpec(users=50, events=500, seed=1)))
    b = list(shop_workload(ShopSpec(users=50, events=500, seed=1)))
    c = list(shop_workload(ShopSpec(users=50, events=500, seed=2)))
    assert a == b
    assert a != c


def test_out_of_order_fraction_moves_some_events_back() -> None:
    records = list(shop_workload(ShopSpec(users=50, events=2_000, seed=1, out_of_order=0.1)))
    late = sum(1 for prev, cur in itertools.pairwise(records) if cur["ts"] < prev["ts"])
    assert 50 < late < 400


def test_experiment_workload_converts_at_the_variant_rate() -> None:
    def variant_of(uid: str) -> str:
        return "a" if int(uid[1:]) % 2 else "b"

    records = list(
        experiment_workload(
            users=20_000,
            rates={"a": 0.1, "b": 0.3},
            variant_of=variant_of,
            convert_after_ms=3_600_000,
        )
    )
    arms = [r for r in records if r["type"] == "cart_add"]
    buys = [r for r in records if r["type"] == "purchase"]
    assert len(arms) == 20_000
    assert [r["ts"] for r in records] == sorted(r["ts"] for r in records)
    arm_ts = {r["user_id"]: r["ts"] for r in arms}
    assert all(b["ts"] >= arm_ts[b["user_id"]] + 3_600_000 for b in buys)
    by_variant = Counter(variant_of(b["user_id"]) for b in buys)
    assert abs(by_variant["a"] / 10_000 - 0.1) < 0.015
    assert abs(by_variant["b"] / 10_000 - 0.3) < 0.015


def test_write_jsonl_plain_and_gzip(tmp_path: Path) -> None:
    records = [{"user_id": "u1", "type": "login", "ts": 1}, {"user_id": "u2", "type": "x", "ts": 2}]
    assert write_jsonl(tmp_path / "e.jsonl", records) == 2
    assert write_jsonl(tmp_path / "e.jsonl.gz", records) == 2
    plain = (tmp_path / "e.jsonl").read_text().splitlines()
    with gzip.open(tmp_path / "e.jsonl.gz", "rt") as f:
        zipped = f.read().splitlines()
    assert [json.loads(x) for x in plain] == records
    assert zipped == plain
