"""Timer-index scans from a floor find exactly what a full scan finds, past the tombstones."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from rocksdict import Options, Rdict

from nudgeflow.tables import timers as timer_index
from nudgeflow.tables.timer_floors import ADD_GRACE_S, FULL_SCAN_S, TimerFloors


class _Partition:
    """One partition's RocksDB behind the table calls the timer helpers make."""

    def __init__(self, db: Rdict) -> None:
        self.db = db
        self.data = self
        self._dbs = {0: db}

    def get(self, key: bytes) -> Any:
        return self.db.get(key)

    def __setitem__(self, key: bytes, value: bytes) -> None:
        self.db[key] = value

    def pop(self, key: bytes, default: Any) -> Any:
        value = self.db.get(key)
        if value is None:
            return default
        del self.db[key]
        return value


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def table(tmp_path: Path) -> Iterator[_Partition]:
    db = Rdict(str(tmp_path / "db"), Options(raw_mode=True))
    try:
        yield _Partition(db)
    finally:
        db.close()


def _add(table: _Partition, floors: TimerFloors, user: bytes, deadline: int) -> None:
    timer_index.add(table, user, deadline)
    floors.lower(0, deadline)


def test_a_floor_scan_finds_what_a_full_scan_finds(table: _Partition) -> None:
    clock = _Clock()
    floors = TimerFloors(clock)
    for n in range(100):
        _add(table, floors, b"u%d" % n, 1_000 + n)
    assert timer_index.due(table, 0, 1_049, 1_000, floors) == [
        (1_000 + n, b"u%d" % n) for n in range(50)
    ]
    for n in range(50):  # fired: their entries are now tombstones
        timer_index.remove(table, b"u%d" % n, 1_000 + n)
    clock.now += 2 * ADD_GRACE_S  # the adds are long in RocksDB (tables/direct.py)

    assert timer_index.earliest(table, 0, floors) == 1_050
    assert floors.start(0, table.db) == 1_050  # the next scan seeks past the tombstones
    assert timer_index.due(table, 0, 2_000, 1_000, floors) == timer_index.due(
        table, 0, 2_000, 1_000
    )


def test_an_entry_added_below_the_floor_is_found(table: _Partition) -> None:
    floors = TimerFloors()
    _add(table, floors, b"late", 5_000)
    assert timer_index.earliest(table, 0, floors) == 5_000

    _add(table, floors, b"early", 10)  # e.g. an event with an old timestamp

    assert timer_index.due(table, 0, 6_000, 10, floors) == [(10, b"early"), (5_000, b"late")]


def test_an_empty_index_then_an_add_is_found(table: _Partition) -> None:
    floors = TimerFloors()
    assert timer_index.earliest(table, 0, floors) is None  # floor: "no entry at all"

    _add(table, floors, b"ana", 42)

    assert timer_index.earliest(table, 0, floors) == 42


def test_entries_written_behind_its_back_are_found_after_a_rebalance(table: _Partition) -> None:
    floors = TimerFloors()
    _add(table, floors, b"mine", 5_000)
    assert timer_index.earliest(table, 0, floors) == 5_000
    timer_index.add(table, b"restored", 7)  # a changelog replay, not through `lower`
    assert timer_index.earliest(table, 0, floors) == 5_000  # the floor hides it ...

    floors.forget()  # ... until the rebalance that replayed it

    assert timer_index.earliest(table, 0, floors) == 7


def test_a_reopened_database_or_an_old_floor_means_a_full_scan(table: _Partition) -> None:
    clock = _Clock()
    floors = TimerFloors(clock)
    _add(table, floors, b"mine", 5_000)
    timer_index.earliest(table, 0, floors)
    assert floors.start(0, object()) is None  # another RocksDB object: the floor is void
    timer_index.earliest(table, 0, floors)

    clock.now += FULL_SCAN_S / 2
    timer_index.add(table, b"restored", 7)
    assert timer_index.earliest(table, 0, floors) == 5_000  # floor scans keep the age
    clock.now += FULL_SCAN_S
    assert timer_index.earliest(table, 0, floors) == 7  # the safety net: a full scan


def test_forget_on_every_rebalance_signal() -> None:
    class _Signal:
        def __init__(self) -> None:
            self.receivers: list[Any] = []

        def connect(self, fun: Any, **_: Any) -> Any:
            self.receivers.append(fun)
            return fun

    class _App:
        on_partitions_revoked = _Signal()
        on_partitions_assigned = _Signal()
        on_rebalance_complete = _Signal()

    floors = TimerFloors().attach(_App())
    signals = (_App.on_partitions_revoked, _App.on_partitions_assigned, _App.on_rebalance_complete)
    assert [len(s.receivers) for s in signals] == [1, 1, 1]
    floors.found(0, "db", 100, None)

    asyncio.run(_App.on_rebalance_complete.receivers[0](None))
    assert floors.start(0, "db") is None


def test_an_add_not_yet_in_rocksdb_keeps_the_floor_below_it(table: _Partition) -> None:
    """tables/direct.py puts an entry in RocksDB only when its changelog record is acked:
    a scan in between must not raise the floor over it."""
    clock = _Clock()
    floors = TimerFloors(clock)
    _add(table, floors, b"mine", 5_000)
    assert timer_index.earliest(table, 0, floors) == 5_000

    floors.lower(0, 10)  # written; its changelog record is not acked yet
    clock.now += 0.01
    assert timer_index.earliest(table, 0, floors) == 5_000  # RocksDB has no entry at 10 ...
    timer_index.add(table, b"early", 10)  # ... until the ack
    clock.now += 0.01

    assert timer_index.earliest(table, 0, floors) == 10


def test_adds_stop_holding_the_floor_down_once_old(table: _Partition) -> None:
    clock = _Clock()
    floors = TimerFloors(clock)
    _add(table, floors, b"gone", 10)
    timer_index.remove(table, b"gone", 10)  # fired at once
    _add(table, floors, b"mine", 5_000)
    assert floors.start(0, table.db) is None
    timer_index.earliest(table, 0, floors)
    assert floors.start(0, table.db) == 10  # the add at 10 may still be on its way

    clock.now += 2 * ADD_GRACE_S
    timer_index.earliest(table, 0, floors)

    assert floors.start(0, table.db) == 5_000
