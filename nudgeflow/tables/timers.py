"""The deadline-ordered timer index, kept in the user state table itself.

One entry per user with something due (an armed rule):
key = b"\\x00" + 8-byte big-endian deadline (ms) + user id, value = b"1".
User ids cannot start with a control character (the event parser refuses
them), so all index keys sort before every user key, in deadline order: the
due timers of a partition are a range scan from the first key up to `now`,
and the cost is proportional to the timers that are due, not to the users or
timers pending (DESIGN §7).

Why in the same table: state and index then share one changelog partition,
written in order, so whatever prefix of writes survives a crash is
consistent: the index entry for a new deadline is written *before* the state
that records it (`UserState.indexed`), and the old entry is deleted *after*.
An entry the state does not name is a leftover and is dropped when it comes due.

Lazy, not exact: the entry may be *earlier* than the user's real next deadline.
Each activity event pushes an inactivity deadline; moving the entry every time
would cost two more changelog records per event. Instead the entry stays put
until it comes due; then the evaluate agent fires what is due and re-files the
user under the real next deadline. Only a deadline that moves *earlier* (or a
user with none) makes it move at once. Invariant: `indexed <= next_deadline()`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from nudgeflow.tables.timer_floors import TimerFloors
from nudgeflow.types.tables import TableView

PREFIX = b"\x00"
_MARK = b"1"
_KEY_START = len(PREFIX) + 8


def index_key(deadline_ms: int, user_key: bytes) -> bytes:
    return PREFIX + deadline_ms.to_bytes(8, "big") + user_key


def split_key(key: bytes) -> tuple[int, bytes]:
    return int.from_bytes(key[len(PREFIX) : _KEY_START], "big"), key[_KEY_START:]


def add(table: TableView, user_key: bytes, deadline: int | None) -> None:
    if deadline is not None:
        table[index_key(deadline, user_key)] = _MARK


def remove(table: TableView, user_key: bytes, deadline: int | None) -> None:
    if deadline is not None:
        table.pop(index_key(deadline, user_key), None)


def present(table: TableView, deadline: int, user_key: bytes) -> bool:
    """Whether the entry is still there for `table`'s reader: a scan reads RocksDB,
    which may not have a removal yet (tables/direct.py)."""
    return table.get(index_key(deadline, user_key)) is not None


def _partition_db(table: TableView, partition: int) -> Any | None:
    """The rocksdict DB of one partition, or None if it is not open here.

    Faust exposes no range scans, so we reach for the store's per-partition
    DBs (`faust.stores.rocksdb.Store._dbs`); keys are raw because the table's
    key type is bytes.
    """
    dbs = getattr(table.data, "_dbs", None)
    return None if dbs is None else dbs.get(partition)


def _scan(
    table: TableView, partition: int, floors: TimerFloors | None = None
) -> Iterator[tuple[int, bytes]]:
    """The partition's entries in deadline order; with `floors`, from the partition's
    floor on (tables/timer_floors.py), and the first entry seen becomes the floor."""
    db = _partition_db(table, partition)
    if db is None:
        return
    since = floors.start(partition, db) if floors is not None else None
    it = db.iter()
    it.seek(PREFIX if since is None else index_key(since, b""))
    first = True
    while it.valid():
        key = it.key()
        if not key.startswith(PREFIX):
            break
        entry = split_key(key)
        if first and floors is not None:
            floors.found(partition, db, entry[0], since)
        first = False
        yield entry
        it.next()
    if first and floors is not None:
        floors.found(partition, db, None, since)


def due(
    table: TableView,
    partition: int,
    now_ms: int,
    limit: int,
    floors: TimerFloors | None = None,
) -> list[tuple[int, bytes]]:
    """(deadline, user_key) with deadline <= now_ms, earliest first, at most `limit`."""
    out: list[tuple[int, bytes]] = []
    for deadline, user_key in _scan(table, partition, floors):
        if deadline > now_ms or len(out) >= limit:
            break
        out.append((deadline, user_key))
    return out


def earliest(table: TableView, partition: int, floors: TimerFloors | None = None) -> int | None:
    """The smallest deadline indexed in the partition, or None."""
    return next((deadline for deadline, _ in _scan(table, partition, floors)), None)


def is_index_key(key: bytes) -> bool:
    return key.startswith(PREFIX)
