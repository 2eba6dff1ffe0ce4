"""PendingTimers: counts index entries per owned partition from deltas, scanning a partition
once when first seen; a real RocksDB (rocksdict, raw mode as Faust opens it) stands in for
the table's partition stores."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
from faust.types import TP
from rocksdict import Options, Rdict

from nudgeflow.observability import metrics
from nudgeflow.pipeline.probes.pending import PendingTimers, count_index
from nudgeflow.tables import timers as timer_index

TICKS = "t.ticks"


@pytest.fixture
def dbs(tmp_path: Path) -> Iterator[dict[int, Rdict]]:
    opened = {p: Rdict(str(tmp_path / f"p{p}"), Options(raw_mode=True)) for p in (0, 1)}
    yield opened
    for db in opened.values():
        db.close()


def _runtime(dbs: dict[int, Rdict], owned: list[int]) -> SimpleNamespace:
    assigned = {TP(TICKS, p) for p in owned} | {TP("t.events", p) for p in owned}
    app = SimpleNamespace(assignor=SimpleNamespace(assigned_actives=lambda: assigned))
    return SimpleNamespace(
        app=app,
        users=SimpleNamespace(data=SimpleNamespace(_dbs=dbs)),
        topics=SimpleNamespace(ticks=TICKS),
    )


def _arm(db: Rdict, user: bytes, deadline: int) -> None:
    db[timer_index.index_key(deadline, user)] = b"1"
    db[user] = b"state"  # user keys sort after the index and are not counted


def _gauge() -> float:
    return metrics.REGISTRY.get_sample_value("nudgeflow_timers_pending") or 0.0


def test_count_index_stops_at_the_user_keys(dbs: dict[int, Rdict]) -> None:
    for i in range(5):
        _arm(dbs[0], f"u{i}".encode(), 1_000 + i)
    rt = _runtime(dbs, [0])
    assert count_index(rt.users, 0) == 5  # type: ignore[arg-type]
    assert count_index(rt.users, 1) == 0  # type: ignore[arg-type]
    assert count_index(rt.users, 7) == 0  # type: ignore[arg-type]  # not open here


def test_first_sight_scans_then_deltas_apply(dbs: dict[int, Rdict]) -> None:
    for i in range(3):
        _arm(dbs[0], f"u{i}".encode(), 1_000 + i)
    pending = PendingTimers(_runtime(dbs, [0, 1]))  # type: ignore[arg-type]
    # The agent writes, then reports; RocksDB gets the entry only when its changelog
    # record is acked (tables/direct.py): the first scan is from before it.
    pending.moved(None, 5_000, partition=0)
    _arm(dbs[0], b"new", 5_000)
    assert pending.counts == {0: 4}
    pending.moved(None, 6_000, partition=0)  # armed
    pending.moved(6_000, 7_000, partition=0)  # deadline moved: still one entry
    pending.moved(1_000, None, partition=0)  # fired, nothing left
    assert pending.counts == {0: 4}
    pending.moved(None, 1, partition=1)  # partition 1 is scanned on its first change
    assert pending.counts == {0: 4, 1: 1}
    assert pending.total == _gauge() == 5


async def test_rebalances_drop_lost_partitions_and_count_new_ones(dbs: dict[int, Rdict]) -> None:
    _arm(dbs[0], b"a", 10)
    _arm(dbs[1], b"b", 20)
    _arm(dbs[1], b"c", 30)
    rt = _runtime(dbs, [0, 1])
    pending = PendingTimers(rt)  # type: ignore[arg-type]

    await pending._on_rebalance_complete(rt.app)
    assert pending.counts == {0: 1, 1: 2} and _gauge() == 3
    await pending._on_revoked(rt.app, {TP(TICKS, 1), TP("t.events", 0)})
    assert pending.counts == {0: 1} and _gauge() == 1  # only the ticks topic names partitions
    pending.counts[0] = 99  # a partition still owned is not rescanned
    await pending._on_rebalance_complete(rt.app)
    assert pending.counts == {0: 99, 1: 2}


def test_changes_outside_a_stream_are_ignored(dbs: dict[int, Rdict]) -> None:
    pending = PendingTimers(_runtime(dbs, [0]))  # type: ignore[arg-type]
    pending.moved(None, 5)  # no current Faust event: partition unknown
    assert pending.counts == {}
