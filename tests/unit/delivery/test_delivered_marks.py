"""Dedupe marks expire (tables/delivered.py), on a real RocksDB standing in for a table."""

from __future__ import annotations

from pathlib import Path

import rocksdict

from nudgeflow.tables import delivered
from nudgeflow.tables.delivered import DELIVERED, RETRYING, Sweeper
from nudgeflow.tables.single import SinglePartitionTable


def OneDbTable(path: Path) -> SinglePartitionTable:
    return SinglePartitionTable(
        rocksdict.Rdict(str(path), options=rocksdict.Options(raw_mode=True))
    )


def test_first_mark_is_filed_once_and_expires_with_its_entry(tmp_path: Path) -> None:
    t = OneDbTable(tmp_path / "db")
    key = delivered.key("trg-1", "zapier")
    delivered.mark(t, key, RETRYING, now_ms=1_000, ttl_ms=500)
    delivered.mark(t, key, DELIVERED, now_ms=1_200, ttl_ms=500)  # a later state: not refiled
    assert sorted(t.stored_keys()) == [delivered.expiry_key(1_500, key), key]
    sweeper = Sweeper()
    assert sweeper.sweep(t, 0, now_ms=1_499, limit=10) == 0
    assert t.get(key) == DELIVERED
    assert sweeper.sweep(t, 0, now_ms=1_500, limit=10) == 1
    assert t.stored_keys() == []


def test_sweeps_in_expiry_order_up_to_the_limit_and_leaves_the_rest(tmp_path: Path) -> None:
    t = OneDbTable(tmp_path / "db")
    for n in range(10):
        delivered.mark(t, delivered.key(f"trg-{n}", "d"), DELIVERED, now_ms=n * 100, ttl_ms=1_000)
    sweeper = Sweeper()
    assert sweeper.sweep(t, 0, now_ms=1_450, limit=3) == 3  # trg-0..2 (expired at 1000..1200)
    assert sweeper.sweep(t, 0, now_ms=1_450, limit=3) == 2  # trg-3, trg-4; trg-5 is at 1500
    alive = {k for k in t.stored_keys() if not k.startswith(delivered.INDEX)}
    assert alive == {delivered.key(f"trg-{n}", "d") for n in range(5, 10)}
    assert sweeper.sweep(t, 1, now_ms=10**12, limit=3) == 0  # a partition not open here


def test_a_reopened_partition_is_scanned_from_the_start(tmp_path: Path) -> None:
    t = OneDbTable(tmp_path / "db")
    sweeper = Sweeper()
    delivered.mark(t, b"a|d", DELIVERED, now_ms=0, ttl_ms=100)
    assert sweeper.sweep(t, 0, now_ms=100, limit=5) == 1  # floor now at 100
    sweeper.forget()  # a rebalance: another worker may have written the partition
    t.db[delivered.expiry_key(50, b"b|d")] = b"1"  # filed below the old floor
    t.db[b"b|d"] = DELIVERED
    assert sweeper.sweep(t, 0, now_ms=100, limit=5) == 1
    assert t.stored_keys() == []


def test_a_partition_is_scanned_at_most_every_so_often(tmp_path: Path) -> None:
    t = OneDbTable(tmp_path / "db")
    for n in range(3):
        delivered.mark(t, f"{n}|d".encode(), DELIVERED, now_ms=0, ttl_ms=100)
    sweeper = Sweeper(every_s=1.0)
    assert sweeper.sweep(t, 0, now_ms=1_000, limit=1) == 1
    assert sweeper.sweep(t, 0, now_ms=1_999, limit=1) == 0  # scanned 0.999 s ago
    assert sweeper.sweep(t, 0, now_ms=2_000, limit=5) == 2
