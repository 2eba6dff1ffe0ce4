"""Writes to a Faust table without Faust's per-write machinery.

Same RocksDB databases, same changelog topic and partitions, same recovery;
only the write path differs. Faust's `table[key] = value` inside an agent
builds a `FutureMessage`, queues it in the producer buffer, runs sensors on
send and on ack, and writes the persisted changelog offset to RocksDB on
every ack (its cost: docs/performance.md, "Table writes"). Here a write is a
dict entry plus a queued record; `flush()` hands the queue to the producer in
order.

Invariant: the local RocksDB only ever holds a prefix of the changelog. A write
goes to an in-memory overlay first (reads see it at once) and reaches RocksDB
when the broker has acknowledged its changelog record, in changelog order, in
one batch with the partition's persisted offset (steps 3 and 4 of
tables/checkpoint.py, which numbers the whole ordering). Faust writes RocksDB at
once instead, and a kill -9 could leave the local DB ahead of the changelog and
lose a timer (docs/reliability.md, "A local RocksDB ahead of its changelog").

Also safe:
* Order: one producer, queued writes sent in order, so each changelog
  partition gets them in the order they were made (tables/timers.py relies on it).
* Rebalance: Faust flushes the producer before it revokes partitions, but does
  not wait for the agents (`stream_wait_empty` is off); whatever of a revoked
  partition is still queued or unacknowledged then is dropped, and the source
  records behind it are never acked: the consumer drops every ack made across a
  rebalance (pipeline/consumer.py), so the partition's new owner handles them again.

Range scans (the timer index) read RocksDB, so they see a write one broker
round trip late; a timer entry is never due that soon after it is written.

Every writer of a table must use this path (or none): mixing it with Faust's
buffered path could reorder one key's changelog records.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any

import faust
import rocksdict
from faust import current_event
from faust.types import TP

from nudgeflow.observability import metrics
from nudgeflow.tables.write_queue import Marker, Write, WriteQueue
from nudgeflow.types.records import RecordSender

log = logging.getLogger(__name__)


# The partition of the record being handled when an agent handles several per stream
# iteration (agents/batch.py); unset, the current event's. Task-local like Faust's.
_handling: ContextVar[int | None] = ContextVar("nudgeflow_handling_partition", default=None)


def handling(partition: int) -> None:
    """Table reads and writes of this task belong to `partition` from now on (the batch
    path sets it before each record it handles)."""
    _handling.set(partition)


def _partition() -> int:
    partition = _handling.get()
    if partition is not None:
        return partition
    event = current_event()
    if event is None:
        raise RuntimeError("table writes must happen inside a stream iteration")
    return int(event.message.partition)


class DirectTable:
    """A Faust table's reads and writes for the partition of the current event."""

    def __init__(self, table: faust.Table, sender: RecordSender) -> None:
        self.table = table
        self.name = table.name
        self._sender = sender
        self._overlay: dict[bytes, Write] = {}  # newest write per key not yet in RocksDB
        self._queue = WriteQueue(self._released, self._hold_failed)  # not yet sent
        self._sent: dict[int, deque[Write]] = {}  # partition -> sent, not yet in RocksDB
        self._flushing = asyncio.Lock()  # one flush at a time keeps the changelog in order
        self._crashing: asyncio.Future[Any] | None = None  # app.crash() after a failed write
        self._releasing: asyncio.Future[None] | None = None  # flush after a hold's ack
        self._release_again = False
        self._sets = metrics.faust_table_operations.labels(table=self.name, operation="set")
        self._deletes = metrics.faust_table_operations.labels(table=self.name, operation="delete")

    @property
    def data(self) -> Any:
        """The Faust store (its per-partition DBs serve the timer index's range scans)."""
        return self.table.data

    @property
    def unapplied(self) -> int:
        """Writes not yet in RocksDB (queued, or sent and waiting for the broker's ack)."""
        return self._queue.writes + sum(len(sent) for sent in self._sent.values())

    def _db(self, partition: int) -> Any:
        return self.table.data._db_for_partition(partition)  # type: ignore[attr-defined]

    def get(self, key: bytes, default: Any = None) -> Any:
        write = self._overlay.get(key)
        value = self._db(_partition()).get(key) if write is None else write.value
        return default if value is None else value

    def _write(self, key: bytes, value: bytes | None) -> Write:
        write = Write(_partition(), key, value)
        self._overlay[key] = write
        self._queue.write(write)
        return write

    def __setitem__(self, key: bytes, value: bytes) -> None:
        self._write(key, value)
        self._sets.inc()

    def pop(self, key: bytes, default: Any = None) -> Any:
        value = self.get(key)
        if value is None:
            return default
        self._write(key, None)
        self._deletes.inc()
        return value

    async def put_acked(self, key: bytes, value: bytes) -> None:
        """Write, send, and return once the broker has acknowledged the changelog record:
        the value survives a kill -9 from then on. For a table no one holds (a held
        partition would not send it; that is an error here, not a wait)."""
        write = self._write(key, value)
        self._sets.inc()
        await self.flush()
        if write.future is None:  # another flush had it; wait for that one to finish
            await self.flush()
        if write.future is None:
            raise RuntimeError(f"{self.name}: put_acked on a held partition")
        await asyncio.shield(write.future)

    async def acked(self, key: bytes) -> None:
        """Return once the newest write of `key` is acknowledged by the broker: sent after
        whatever holds its partition (an earlier trigger's ack), then acked. For a record
        that may only leave once this write would survive a kill -9 (agents/identity.py)."""
        write = self._overlay.get(key)
        if write is None:
            return  # in RocksDB: acknowledged already
        while write.future is None:
            await self.flush()
            if write.future is not None:
                break
            blocker = self._queue.blocker(write.partition)
            if blocker is None:
                raise RuntimeError(f"{self.name}: a write neither sent nor held")
            await asyncio.wait([blocker])
            if blocker.cancelled() or blocker.exception() is not None:
                raise RuntimeError(f"{self.name}: the record a write waited for failed")
        await asyncio.shield(write.future)

    def hold_until(self, future: asyncio.Future[Any]) -> None:
        """Later writes of the current partition go out only once `future` succeeds.

        For a trigger record: see tables/write_queue.py for why.
        """
        self._queue.hold(_partition(), future)

    def after_sent(self, callback: Callable[[], Any]) -> None:
        """Call back once every write made so far in the current partition is sent
        (at once if none waits behind a hold): the agent acks its source record then."""
        self._queue.mark(_partition(), callback)

    async def flush(self) -> None:
        """Hand the queued changelog records that no hold blocks to the producer, in order.

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
            ready = self._queue.ready()
            try:
                await self._send(topic, ready)
            finally:
                self._queue.sent()

    async def _send(self, topic: str, ready: list[Write | Marker]) -> None:
        for sent, item in enumerate(ready):
            if isinstance(item, Marker):
                item.callback()
                continue
            try:
                item.future = await self._sender.send(topic, item.key, item.value, item.partition)
            except BaseException:
                self._queue.put_back(ready[sent:])
                raise
            in_flight = self._sent.setdefault(item.partition, deque())
            in_flight.append(item)
            item.future.add_done_callback(lambda _, p=item.partition: self._apply(p))

    def _released(self) -> None:
        """A hold's record was acked: send what waited behind it (one flush at a time)."""
        self._release_again = True
        if self._releasing is None or self._releasing.done():
            self._releasing = asyncio.ensure_future(self._flush_released())

    async def _flush_released(self) -> None:
        while self._release_again:
            self._release_again = False
            try:
                await self.flush()
            except Exception as exc:  # the agent's next flush tries again
                log.warning("%s: sending released writes failed: %r", self.name, exc)
                return

    def _hold_failed(self, partition: int, error: BaseException) -> None:
        """The record a hold waited for was given up on by the producer: what waits
        behind it must never reach the changelog, so the worker stops and a restart
        replays from what Kafka has (as for a failed changelog write, `_failed`)."""
        log.error("%s[%d]: a held-for record failed: %r", self.name, partition, error)
        self._crash(error)

    def _apply(self, partition: int) -> None:
        """Move the acknowledged front of a partition's sent writes into RocksDB."""
        in_flight = self._sent.get(partition)
        if not in_flight or not in_flight[0].future.done():
            return  # one callback per record: an earlier one already took this batch's acks
        batch = rocksdict.WriteBatch(raw_mode=True)
        offset = None
        while in_flight and in_flight[0].future.done():
            write = in_flight.popleft()
            future = write.future
            if future.cancelled() or future.exception() is not None:
                self._failed(write)
                return
            if write.value is None:
                batch.delete(write.key)
            else:
                batch.put(write.key, write.value)
            offset = future.result().offset
            if self._overlay.get(write.key) is write:
                del self._overlay[write.key]
        store: Any = self.table.data
        db = getattr(store, "_dbs", {}).get(partition)
        if offset is None or db is None:  # nothing new, or revoked (see `revoked`)
            return
        batch.put(store.offset_key, str(offset).encode())
        db.write(batch)

    def _failed(self, write: Write) -> None:
        """A changelog record the producer gave up on (after its own retries).

        RocksDB must not get it, nor anything after it in the partition, or the
        local DB would stop being a prefix of the changelog; so the worker stops,
        and a restart recovers from what the changelog has.
        """
        future = write.future
        error = asyncio.CancelledError() if future.cancelled() else future.exception()
        metrics.faust_send_errors.inc()
        log.error("changelog write to %s[%d] failed: %r", self.name, write.partition, error)
        self._sent.pop(write.partition, None)
        self._crash(error)

    def _crash(self, error: BaseException) -> None:
        app: Any = self.table.app
        self._crashing = asyncio.ensure_future(app.crash(error))

    def revoked(self, partitions: set[int]) -> None:
        """Forget writes of partitions this worker no longer owns."""
        for partition in partitions:
            self._apply(partition)
            left = self._sent.pop(partition, None)
            if left:
                log.warning(
                    "%s[%d]: %d writes not acknowledged at revocation; the changelog has "
                    "them if the broker took them",
                    self.name,
                    partition,
                    len(left),
                )
        for key in [k for k, w in self._overlay.items() if w.partition in partitions]:
            del self._overlay[key]
        self._queue.drop(partitions)

    def attach(self, app: faust.App) -> DirectTable:
        """Follow the app's rebalances (mode signals: sender, *args, **kwargs)."""

        async def on_revoked(sender: Any, *args: Any, **kwargs: Any) -> None:
            revoked: set[TP] = args[0] if args else set()
            self.revoked({tp.partition for tp in revoked})

        signals: Any = app  # mode's Signal typing rejects receivers taking *args
        signals.on_partitions_revoked.connect(on_revoked, weak=False)
        return self
