"""The `delivered` table: which (trigger, destination) pairs are settled, for webhook dedupe.

Key `trigger_id|destination`, value one of `DELIVERED`, `RETRYING`, `DEAD`. A trigger
that upstream wrote twice reaches a destination once: the deliver agent skips a pair
that has any mark (agents/deliver.py). Partitioned like the triggers topic, so a mark
is written to the changelog partition of the trigger record that caused it.

Bounded: a mark lives `DeliverySettings.mark_ttl_s` (the retry horizon plus a margin;
no delivery stays in flight longer, see `horizon_s`), then it is removed. The first
mark of a pair also files an expiry entry, key `b"\\x00" + 8-byte big-endian expiry
(ms) + mark key`, in the same table, as the timer index does (tables/timers.py):
index keys sort before every mark key (a trigger id never starts with a control
character) in expiry order, and the entry is written before the mark, so a crash
can leave an entry without a mark (removing nothing) but never a mark that is not
filed. `Sweeper.sweep` range-scans the expired front of one partition's index and
deletes entry and mark; the deliver agent calls it for the partition of each record
it settles, and a partition is scanned at most every `Sweeper.every_s` (opening a
RocksDB iterator per record cost a third of the deliver agent's throughput), up to
`limit` marks at a time: far more than a partition adds in that time, so removals keep
pace with additions and the table stays the size of one horizon of traffic.
"""

from __future__ import annotations

from typing import Any, cast

import faust

from nudgeflow.observability import metrics
from nudgeflow.tables import options
from nudgeflow.tables.schema import RAW_TABLE
from nudgeflow.types.tables import TableView

NAME = "delivered"
DELIVERED, RETRYING, DEAD = b"delivered", b"retrying", b"dead"
INDEX = b"\x00"
_FILED = b"1"
_MARK_START = len(INDEX) + 8


def key(trigger_id: str, destination: str) -> bytes:
    return f"{trigger_id}|{destination}".encode()


def expiry_key(expires_ms: int, mark_key: bytes) -> bytes:
    return INDEX + expires_ms.to_bytes(8, "big") + mark_key


def mark(table: TableView, mark_key: bytes, state: bytes, now_ms: int, ttl_ms: int) -> None:
    """Set a pair's state; its first mark is filed to expire `ttl_ms` from now."""
    if table.get(mark_key) is None:
        table[expiry_key(now_ms + ttl_ms, mark_key)] = _FILED
    table[mark_key] = state


class Sweeper:
    """Deletes expired marks, one partition at a time, starting past its own tombstones.

    RocksDB keeps deleted keys as tombstones until compaction and a scan steps over
    each one; every sweep deletes at the front of the index, so each partition's scan
    starts at the last expiry it removed (its floor). Marks are only ever filed at
    `now + ttl`, later than any floor, so nothing is filed below it; the floors are
    forgotten on a rebalance and when a partition's RocksDB was reopened.
    """

    def __init__(self, every_s: float = 0.0) -> None:
        self.every_s = every_s
        self._floors: dict[int, tuple[int, int]] = {}  # partition -> (id(db), floor ms)
        self._last: dict[int, float] = {}  # partition -> when it was last scanned (ms)

    def sweep(self, table: TableView, partition: int, now_ms: int, limit: int) -> int:
        """Remove up to `limit` marks of `partition` that expired by `now_ms` (nothing if
        the partition was scanned less than `every_s` ago)."""
        if now_ms - self._last.get(partition, -(2**62)) < self.every_s * 1000:
            return 0
        self._last[partition] = now_ms
        db = _partition_db(table, partition)
        if db is None:
            return 0
        known = self._floors.get(partition)
        floor = known[1] if known is not None and known[0] == id(db) else 0
        it = db.iter()
        it.seek(expiry_key(floor, b""))
        removed = 0
        while removed < limit and it.valid():
            entry = bytes(it.key())
            if not entry.startswith(INDEX):
                break
            expires = int.from_bytes(entry[len(INDEX) : _MARK_START], "big")
            if expires > now_ms:
                break
            table.pop(entry[_MARK_START:], None)
            table.pop(entry, None)
            floor = expires
            removed += 1
            it.next()
        self._floors[partition] = (id(db), floor)
        if removed:
            metrics.delivered_marks_expired.inc(removed)
        return removed

    def forget(self) -> None:
        self._floors.clear()


def _partition_db(table: TableView, partition: int) -> Any | None:
    """The partition's rocksdict DB (Faust exposes no range scans), or None."""
    dbs = getattr(table.data, "_dbs", None)
    return None if dbs is None else dbs.get(partition)


def define(app: faust.App, partitions: int) -> faust.Table:
    table = app.Table(
        NAME,
        default=None,
        **RAW_TABLE,
        partitions=partitions,
        options=options.small(),
        help="trigger_id|destination -> delivered/retrying/dead (webhook dedupe), and the "
        "expiry index of those marks",
    )
    return cast(faust.Table, table)
