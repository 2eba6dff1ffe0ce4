"""The deliver agents' in-flight records: one task each, acked when settled, handed back
whole on a rebalance or a shutdown.

Each record the deliver agents read runs in its own task (`spawn`), bounded by
`max_in_flight`, and is acked when its handler returns. Every task carries a `Flight`:
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
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from nudgeflow.delivery.dispatch import Abandoned

if TYPE_CHECKING:
    from faust.types import EventT, StreamT

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


class Flights:
    def __init__(self, max_in_flight: int) -> None:
        self.max_in_flight = max_in_flight
        self.generation = 0
        self.stopping = False
        self._slots: asyncio.Semaphore | None = None
        self._tasks: dict[asyncio.Task[None], Flight] = {}

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
        task = asyncio.create_task(self._settle(stream, event, handler, flight))
        self._tasks[task] = flight
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        flight = self._tasks.pop(task, None)
        if flight is not None:
            flight.cleanup()
        if self._slots is not None:
            self._slots.release()

    async def _settle(self, stream: StreamT, event: EventT, handler: Handler, f: Flight) -> None:
        for attempt in range(1, _HANDLER_TRIES + 1):
            try:
                await handler(event, f)
            except Abandoned:
                return  # unacked: read again by whoever owns the partition next
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
            await stream.ack(event)
            return
        log.error(
            "deliver: leaving %s@%d unacked; it is re-read on restart",
            event.message.topic,
            event.message.offset,
        )

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
        return len(cancelled), len(committed)

    async def drain(self) -> None:
        """Wait for every in-flight record (tests)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
