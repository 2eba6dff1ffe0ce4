"""The deliver agents' in-flight records: one task each, acked when settled, handed back
whole on a rebalance or a shutdown.

Each record the deliver agents read runs in its own task (`spawn`), bounded by
`max_in_flight`, and is acked when its handler returns and every earlier record of its
partition is acked (`InOrderAcks`). Every task carries a `Flight`:
the generation of the assignment it was read under. Before a task does anything that
settles the record (the HTTP call, producing a parked, retry or dead-letter record) it
calls `Flight.commit()`, which says no once the generation has moved on.

On a revocation (every rebalance; Faust's eager protocol revokes everything) and on
SIGTERM, `hand_back` moves the generation on, cancels the tasks that have not
committed (their records stay unacked, so the next owner reads them again, and no call
was made, so that is not a duplicate) and waits for the committed ones to finish
their call and write their `delivered` marks. The caller then flushes the producer,
so by the time the partitions move the marks are in the changelog the next owner
recovers: a rebalance or a rolling restart sends no webhook twice. Only a kill -9
with a call in flight still can (README, "Receivers").
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from nudgeflow.delivery.dispatch import Abandoned

if TYPE_CHECKING:
    from faust.types import TP, EventT, StreamT

log = logging.getLogger(__name__)

_HANDLER_TRIES = 5


class Flight:
    """One record's task: may it still settle the record here?"""

    __slots__ = ("_flights", "cleanups", "committed", "generation")

    def __init__(self, flights: Flights, generation: int) -> None:
        self._flights = flights
        self.generation = generation
        self.committed = False
        self.cleanups: list[Callable[[], None]] = []  # run when the task ends, however

    def commit(self) -> bool:
        """True: go on and settle (no cancelling from now on); False: hand it back."""
        if not self.committed:
            if self._flights.generation != self.generation or self._flights.stopping:
                return False
            self.committed = True
        return True

    def cleanup(self) -> None:
        for callback in self.cleanups:
            callback()
        self.cleanups.clear()


Handler = Callable[["EventT", Flight], Awaitable[None]]


class _Pending:
    __slots__ = ("event", "settled", "stream")

    def __init__(self, stream: StreamT, event: EventT) -> None:
        self.stream = stream
        self.event = event
        self.settled: bool | None = None  # None: running; False: handed back or given up


class InOrderAcks:
    """Acks each partition's records in offset order, and none past one left unsettled.

    Records settle out of order, and Faust commits what it was told was acked: its gap
    check lets exactly one unacked record through (acks from 697 on with 696 committed
    commit past 696: `min(acked) - committed > 1` in faust-streaming 0.15's
    `Consumer._new_offset`), which lost triggers in rolling restarts. So an ack waits
    for every earlier record of its partition; a record handed back or given up on
    stops its partition's acks (later ones are not kept) until the next assignment,
    which reads the partition again from its committed offset.
    """

    def __init__(self) -> None:
        self._queues: dict[TP, deque[_Pending]] = {}
        self._stopped: set[TP] = set()

    def add(self, stream: StreamT, event: EventT) -> _Pending:
        """A record handed out now (call in offset order per partition)."""
        pending = _Pending(stream, event)
        self._queues.setdefault(event.message.tp, deque()).append(pending)
        return pending

    async def settled(self, pending: _Pending, ok: bool) -> None:
        pending.settled = ok
        tp = pending.event.message.tp
        queue = self._queues.get(tp)
        if queue is None or tp in self._stopped:
            return
        while queue and queue[0].settled:
            head = queue.popleft()
            await head.stream.ack(head.event)
        if queue and queue[0].settled is False:
            self._stopped.add(tp)
            queue.clear()
            log.warning("deliver: %s[%d] acks stop at an unsettled record until reassigned", *tp)

    def reset(self) -> None:
        """A new assignment: everything is read again from the committed offsets."""
        self._queues.clear()
        self._stopped.clear()


class Flights:
    def __init__(self, max_in_flight: int) -> None:
        self.max_in_flight = max_in_flight
        self.generation = 0
        self.stopping = False
        self._slots: asyncio.Semaphore | None = None
        self._tasks: dict[asyncio.Task[None], Flight] = {}
        self.acks = InOrderAcks()

    def __len__(self) -> int:
        return len(self._tasks)

    def flight(self) -> Flight:
        """A flight for a record read now (take it before waiting on anything)."""
        return Flight(self, self.generation)

    async def spawn(self, stream: StreamT, event: EventT, handler: Handler, flight: Flight) -> None:
        """Run `handler(event, flight)` in its own task; ack the event when it returns."""
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.max_in_flight)
        if self.stopping:
            flight.cleanup()
            await asyncio.Event().wait()  # read nothing more; Faust cancels us on stop
        await self._slots.acquire()
        if flight.generation != self.generation:  # revoked while we waited for a slot
            self._slots.release()
            flight.cleanup()
            return
        pending = self.acks.add(stream, event)
        task = asyncio.create_task(self._settle(pending, handler, flight))
        self._tasks[task] = flight
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        flight = self._tasks.pop(task, None)
        if flight is not None:
            flight.cleanup()
        if self._slots is not None:
            self._slots.release()

    async def _settle(self, pending: _Pending, handler: Handler, f: Flight) -> None:
        event = pending.event
        try:
            ok = await self._handle(event, handler, f)
        except asyncio.CancelledError:
            await self.acks.settled(pending, False)
            raise
        await self.acks.settled(pending, ok)

    async def _handle(self, event: EventT, handler: Handler, f: Flight) -> bool:
        """True once settled; False if handed back (Abandoned) or given up on."""
        for attempt in range(1, _HANDLER_TRIES + 1):
            try:
                await handler(event, f)
            except Abandoned:
                return False  # read again by whoever owns the partition next
            except Exception:
                log.exception(
                    "deliver: handling %s[%d]@%d failed (try %d)",
                    event.message.topic,
                    event.message.partition,
                    event.message.offset,
                    attempt,
                )
                await asyncio.sleep(min(2.0**attempt, 30.0))
                continue
            return True
        log.error(
            "deliver: leaving %s@%d unacked; it is re-read on restart",
            event.message.topic,
            event.message.offset,
        )
        return False

    async def hand_back(self, timeout: float, *, stopping: bool = False) -> tuple[int, int]:
        """Cancel what has not committed, wait up to `timeout` s for what has.

        Returns (handed back, finished here)."""
        self.generation += 1
        self.stopping = self.stopping or stopping
        committed = [t for t, f in self._tasks.items() if f.committed]
        cancelled = [t for t, f in self._tasks.items() if not f.committed]
        for task in cancelled:
            task.cancel()
        waiting = committed + cancelled
        if waiting:
            _, late = await asyncio.wait(waiting, timeout=timeout)
            if late:
                log.warning("deliver: %d calls still in flight after %.0f s", len(late), timeout)
        self.acks.reset()
        return len(cancelled), len(committed)

    async def drain(self) -> None:
        """Wait for every in-flight record (tests)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
