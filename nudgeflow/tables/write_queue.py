"""Changelog writes waiting to be sent, some held back until another record is acked.

Why hold a write: a state that says "fired" must never be in the changelog
while the trigger record it fired is not in Kafka. If it were, a kill -9
between the two acks would leave a restarted worker with a state that will
not fire again and no trigger record: a lost reminder. So the agent puts a
*hold* on the user's partition when it sends a trigger record, and every write
queued after it (the user's new state, its timer-index changes, and anything
later in that partition, which keeps the changelog in order) waits for the
trigger's ack. A crash then leaves either both or only the trigger, and the
replayed event or timer sends the same trigger id again, which the deliver
agent drops.

The source record is acknowledged to Faust (so its offset can be committed)
only once its writes are sent: a *marker* in the queue calls back then. Until
then a crash replays the record.

Holds cost no extra records (the outbox they replace cost three per trigger:
docs/reliability.md): a held partition waits one broker round trip, and other
partitions go on.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(slots=True)
class Write:
    """One changelog record on its way to the broker and then to RocksDB."""

    partition: int
    key: bytes
    value: bytes | None  # None: a delete (a tombstone, as Faust writes it)
    future: Any = None  # the producer's ack future, once sent


@dataclass(slots=True)
class Hold:
    """Later items of the partition wait until `future` (another record's ack) succeeds."""

    partition: int
    future: asyncio.Future[Any]
    watched: bool = False  # a done-callback is on the future
    reported: bool = False  # its failure went to `on_failed`


@dataclass(slots=True)
class Marker:
    """`callback` runs once every earlier write of the partition has been sent."""

    partition: int
    callback: Callable[[], Any]


Item = Write | Hold | Marker


class WriteQueue:
    """Items per partition, in the order they were made; `ready()` releases what no hold
    blocks. Per partition because order only matters within one (each changelog
    partition is its own log), and so a blocked partition costs the others nothing:
    marking and releasing never walk items that are still held."""

    def __init__(
        self,
        on_release: Callable[[], None],
        on_failed: Callable[[int, BaseException], None],
    ) -> None:
        self._parts: dict[int, deque[Item]] = {}  # partition -> its items, oldest first
        self._on_release = on_release  # a hold's record was acked: flush again
        self._on_failed = on_failed  # a hold's record failed: its writes must never go out
        self.writes = 0  # Write items queued (for `DirectTable.unapplied`)
        self._sending: set[int] = set()  # partitions of items `ready()` gave out, not yet done

    def __bool__(self) -> bool:
        return bool(self._parts)

    def _part(self, partition: int) -> deque[Item]:
        part = self._parts.get(partition)
        if part is None:
            part = self._parts[partition] = deque()
        return part

    def _queue(self, item: Item) -> None:
        self._part(item.partition).append(item)

    def write(self, write: Write) -> None:
        self._queue(write)
        self.writes += 1

    def hold(self, partition: int, future: asyncio.Future[Any]) -> None:
        self._queue(Hold(partition, future))

    def mark(self, partition: int, callback: Callable[[], Any]) -> None:
        """Call back now if nothing of the partition is queued or being sent, else after
        its writes. Markers of a partition so run in order: Faust commits a source
        partition up to its first unacknowledged offset, and must see its acks in order
        (its gap check lets one unacknowledged offset right after the committed one
        through: `Consumer._new_offset`)."""
        if partition in self._sending or partition in self._parts:
            self._queue(Marker(partition, callback))
        else:
            callback()

    def blocker(self, partition: int) -> asyncio.Future[Any] | None:
        """The ack the partition's queued items wait for (its first hold), or None."""
        for item in self._parts.get(partition, ()):
            if isinstance(item, Hold):
                return item.future
        return None

    def ready(self) -> list[Write | Marker]:
        """Take, partition by partition in order, every write and marker up to the
        partition's first hold whose record is not acked yet (or failed); the rest of
        that partition stays queued in order."""
        out: list[Write | Marker] = []
        for partition in list(self._parts):
            part = self._parts[partition]
            while part:
                item = part[0]
                if isinstance(item, Hold):
                    if not self._passed(item):
                        break
                else:
                    out.append(item)
                    if isinstance(item, Write):
                        self.writes -= 1
                part.popleft()
            if not part:
                del self._parts[partition]
        self._sending = {item.partition for item in out}
        return out

    def sent(self) -> None:
        """The items of the last `ready()` are sent, called or put back."""
        self._sending = set()

    def put_back(self, items: list[Write | Marker]) -> None:
        """Items `ready()` gave out but that could not be sent: first again, in order."""
        for item in reversed(items):
            self._part(item.partition).appendleft(item)
            if isinstance(item, Write):
                self.writes += 1

    def drop(self, partitions: set[int]) -> None:
        """Forget everything of these partitions (revoked: the new owner replays them)."""
        for partition in partitions:
            part = self._parts.pop(partition, None)
            if part:
                self.writes -= sum(isinstance(item, Write) for item in part)

    def _passed(self, hold: Hold) -> bool:
        future = hold.future
        if not future.done():
            if not hold.watched:
                hold.watched = True
                future.add_done_callback(lambda _: self._on_release())
            return False
        error = asyncio.CancelledError() if future.cancelled() else future.exception()
        if error is None:
            return True
        if not hold.reported:  # once; the partition stays blocked
            hold.reported = True
            self._on_failed(hold.partition, error)
        return False
