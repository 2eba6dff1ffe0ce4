"""Writes to a Faust table without Faust's per-write machinery.

Same RocksDB databases, same changelog topic and partitions, same recovery;
only the write path differs. Faust's `table[key] = value` inside an agent
builds a `FutureMessage`, queues it in the producer buffer, runs sensors on
send and on ack, and writes the persisted changelog offset to RocksDB on
every ack: ~400 µs of CPU per write on this machine, more than the rest of a
bare agent's event (docs/performance.md, "Table writes"). Here a write is a
RocksDB put plus a queued `(partition, key, value)`; `flush()` hands the queue
to the producer in order, and each ack writes its offset as the partition's
persisted changelog offset, as Faust does.

Why that is safe:
* Order: one producer, queued writes sent in order, so each changelog
  partition gets them in the order they were made (the timer index relies on
  it, tables/timers.py).
* At-least-once: the agent flushes before it takes the next record, and
  Faust flushes the producer before it commits a source offset, so a committed
  offset never runs ahead of its changelog records.
* Recovery: the persisted offset is the last acked record, as with Faust's
  own writes. It must not lag: a replay from an older offset re-applies old
  values over keys the local DB has newer writes for, but not over keys it
  does not touch, and could leave a state naming a timer-index entry whose
  (local) removal survived the replay while its addition was not replayed.

Every writer of a table must use this path (or none): mixing it with Faust's
buffered path could reorder one key's changelog records.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import faust
from faust import current_event
from faust.types import TP

from nudgeflow.pipeline import metrics
from nudgeflow.pipeline.producer import RecordSender

log = logging.getLogger(__name__)


def _partition() -> int:
    event = current_event()
    if event is None:
        raise RuntimeError("table writes must happen inside a stream iteration")
    return int(event.message.partition)


class DirectTable:
    """A Faust table's reads and writes for the partition of the current event."""

    def __init__(self, table: faust.Table, sender: RecordSender | None = None) -> None:
        self.table = table
        self.name = table.name
        self._sender = sender or RecordSender(table.app)
        self._queue: list[tuple[int, bytes, bytes | None]] = []
        self._flushing = asyncio.Lock()  # one flush at a time keeps the changelog in order
        self._sets = metrics.faust_table_operations.labels(table=self.name, operation="set")
        self._deletes = metrics.faust_table_operations.labels(table=self.name, operation="delete")

    @property
    def data(self) -> Any:
        """The Faust store (its per-partition DBs serve the timer index's range scans)."""
        return self.table.data

    @property
    def pending(self) -> int:
        """Writes made locally whose changelog records are not yet handed to the producer."""
        return len(self._queue)

    def _db(self, partition: int) -> Any:
        return self.table.data._db_for_partition(partition)  # type: ignore[attr-defined]

    def get(self, key: bytes, default: Any = None) -> Any:
        value = self._db(_partition()).get(key)
        return default if value is None else value

    def __setitem__(self, key: bytes, value: bytes) -> None:
        partition = _partition()
        self._db(partition).put(key, value)
        self._queue.append((partition, key, value))
        self._sets.inc()

    def pop(self, key: bytes, default: Any = None) -> Any:
        partition = _partition()
        db = self._db(partition)
        value = db.get(key)
        if value is None:
            return default
        db.delete(key)
        self._queue.append((partition, key, None))  # a tombstone, as Faust writes it
        self._deletes.inc()
        return value

    async def flush(self) -> None:
        """Hand the queued changelog records to the producer, in order.

        On a Kafka error the unsent rest stays queued (in order) and the error
        propagates; the caller retries `flush()`.
        """
        if not self._queue and not self._flushing.locked():
            return
        # Under the lock even when empty: another flush may still be sending records
        # queued before this caller's, and returning early would ack them unsent.
        async with self._flushing:
            if not self._queue:
                return
            topic = self.table.changelog_topic.get_topic_name()
            queue, self._queue = self._queue, []
            for sent, (partition, key, value) in enumerate(queue):
                try:
                    future = await self._sender.send(topic, key, value, partition)
                except BaseException:
                    self._queue = queue[sent:] + self._queue
                    raise
                future.add_done_callback(self._on_ack(partition))

    def _on_ack(self, partition: int) -> Callable[[Any], None]:
        def done(future: Any) -> None:
            if future.cancelled() or future.exception() is not None:
                metrics.faust_send_errors.inc()
                log.error(
                    "changelog write to %s[%d] failed: %r",
                    self.name,
                    partition,
                    None if future.cancelled() else future.exception(),
                )
                return
            store = self.table.data
            if partition in getattr(store, "_dbs", {}):  # revoked partitions are closed
                topic = self.table.changelog_topic.get_topic_name()
                store.set_persisted_offset(TP(topic, partition), future.result().offset)

        return done
