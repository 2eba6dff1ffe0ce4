"""The deadline-ordered timer index.

One entry per user with an armed rule: key = 8-byte big-endian deadline (ms)
followed by the user id, value = b"1". Because RocksDB keeps keys sorted, the
due timers of a partition are a range scan from the first key up to `now`:
the cost is proportional to the timers that are due, not to the users or
timers pending (DESIGN §7).

The index is an ordinary changelog-backed Faust table, so a restarted or
rebalanced worker recovers it with the state and fires what fell due while it
was down. Writes happen only inside the evaluate agent's stream iteration; the
peek used by the tick scheduler is a read-only look at the partition's DB.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import faust

from nudgeflow.tables.schema import RAW_TABLE

_MARK = b"1"


def define(app: faust.App, partitions: int) -> faust.Table:
    return app.Table(
        "timers",
        default=None,
        **RAW_TABLE,
        partitions=partitions,
        help="Deadline-ordered index: be64(deadline_ms) + user_id",
    )


def index_key(deadline_ms: int, user_key: bytes) -> bytes:
    return deadline_ms.to_bytes(8, "big") + user_key


def split_key(key: bytes) -> tuple[int, bytes]:
    return int.from_bytes(key[:8], "big"), key[8:]


def reindex(table: faust.Table, user_key: bytes, old: int | None, new: int | None) -> None:
    """Move a user's index entry from deadline `old` to `new` (either may be None)."""
    if old == new:
        return
    if old is not None:
        table.pop(index_key(old, user_key), None)
    if new is not None:
        table[index_key(new, user_key)] = _MARK


def _partition_db(table: faust.Table, partition: int) -> Any | None:
    """The rocksdict DB of one partition, or None if it is not open here.

    Faust exposes no range scans, so we reach for the store's per-partition
    DBs (`faust.stores.rocksdb.Store._dbs`); keys are raw because the table's
    key serializer is "raw".
    """
    dbs = getattr(table.data, "_dbs", None)
    return None if dbs is None else dbs.get(partition)


def due(table: faust.Table, partition: int, now_ms: int, limit: int) -> Iterator[tuple[int, bytes]]:
    """Yield (deadline, user_key) with deadline <= now_ms, earliest first."""
    db = _partition_db(table, partition)
    if db is None:
        return
    it = db.iter()
    it.seek_to_first()
    n = 0
    while it.valid() and n < limit:
        key = it.key()
        deadline, user_key = split_key(key)
        if deadline > now_ms:
            return
        yield deadline, user_key
        n += 1
        it.next()


def earliest(table: faust.Table, partition: int) -> int | None:
    """The smallest deadline indexed in the partition, or None."""
    db = _partition_db(table, partition)
    if db is None:
        return None
    it = db.iter()
    it.seek_to_first()
    return split_key(it.key())[0] if it.valid() else None


def estimate_pending(table: faust.Table, partitions: list[int]) -> int:
    """RocksDB's cheap key-count estimate over the given partitions (no scan)."""
    total = 0
    for p in partitions:
        db = _partition_db(table, p)
        if db is not None:
            total += db.property_int_value("rocksdb.estimate-num-keys") or 0
    return total
