"""One counted attempt at a record's engine call: the poison-record policy (issue 21.2).

A record whose handling raises or overruns the handling budget is tried again, up to
`max_attempts` in all, and then goes to the events DLQ with the reason; the partition
moves on. The count is durable (tables/attempts.py): an attempt is counted while it
still runs (past `MARK_AFTER_S`) or as soon as it fails, and the count is acknowledged
by the broker before the next attempt starts. So a worker killed in the middle of a
long attempt, or one that loses the partition, leaves the count to whoever goes on.
A record handled in time costs no write.

One exception to "N attempts": an attempt that held the event loop past the whole
budget (one C operation keeping the GIL, which no signal or thread can cut short) is
quarantined at once. Trying it again would stall every partition, `/health` and the
consumer's session again; with three tries a 25 s operation stalled a worker 75 s.

What is not counted: an attempt that ends the process in its first 50 ms (inline) or
`MARK_AFTER_S` (in a thread), say a segfault at once; Kafka being unreachable (retried,
never a poison).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from nudgeflow.agents.alarm import Alarm, InlineOverrun
from nudgeflow.agents.watchdog import EngineThreads, Overrun
from nudgeflow.observability import metrics
from nudgeflow.tables.attempts import ERROR, TIMEOUT, AttemptBook, Attempts

log = logging.getLogger(__name__)

T = TypeVar("T")

Make = Callable[[], Callable[[], T]]  # builds the call afresh (from freshly loaded state)


class Failed(Exception):
    """This attempt failed (and is counted); `attempts.count` says how many so far."""

    def __init__(self, attempts: Attempts, *, final: bool) -> None:
        super().__init__(attempts.error)
        self.attempts = attempts
        self.final = final  # max_attempts reached: quarantine it


class _NotCounted(Exception):
    """Writing the count failed (Kafka); the cause is what the caller sees."""


class Guard:
    """Counted, time-bounded attempts at pure engine calls."""

    def __init__(
        self,
        book: AttemptBook,
        threads: EngineThreads,
        max_attempts: int,
        alarm: Alarm | None = None,
    ) -> None:
        self.book = book
        self.threads = threads
        self.max_attempts = max_attempts
        self.alarm = alarm or Alarm()
        self._offload: set[bytes] = set()  # keys whose next attempt skips the inline run

    def offload(self, key: bytes) -> None:
        """The next attempt at `key` goes straight to an engine thread: a batch that held
        it overran the inline budget (agents/batch.py), and running it inline again
        would hold the loop a second time."""
        self._offload.add(key)

    async def attempt(self, key: bytes, make: Make[T], source: str) -> T:
        """One attempt at `make()()`: inline under the alarm, or (past it, or for a record
        that failed before) in an engine thread under the handling budget.

        Raises `Failed` if it raised or overran (counted durably before this returns),
        with `final` set once `max_attempts` is reached or the attempt held the loop past
        the budget; also, without running it, when the stored count says so already (a
        crash after the last attempt).
        """
        before = self.book.get(key)
        if before is not None and (before.final or before.count >= self.max_attempts):
            raise Failed(before, final=True)
        count = (before.count if before else 0) + 1
        counted: list[Attempts] = []

        async def on_slow() -> None:
            slow = Attempts(count=count, reason=TIMEOUT, error="still running")
            try:
                await self.book.count(key, slow)
            except Exception as exc:
                raise _NotCounted from exc
            counted.append(slow)
            self._log(
                source, count, f"counted: still running after {self.threads.mark_after_s:g} s"
            )

        try:
            inline = before is None and not (self._offload and self._take_offload(key))
            result = await self._run(make, on_slow, inline=inline)
        except _NotCounted as exc:
            raise exc.__cause__ or exc from None  # Kafka: the caller retries, uncounted
        except Overrun as exc:
            held = exc.held_s is not None  # trying again would hold the loop again
            failure = Attempts(count=count, reason=TIMEOUT, error=str(exc), final=held)
            error = None
        except Exception as exc:
            failure, error = Attempts(count=count, reason=ERROR, error=_describe(exc)), exc
        else:
            if before is not None or counted:
                self.book.clear(key)
            return result
        await self._failed(key, failure, source, counted=bool(counted), error=error)
        raise Failed(failure, final=failure.final or count >= self.max_attempts)

    def _take_offload(self, key: bytes) -> bool:
        if key in self._offload:
            self._offload.discard(key)
            return True
        return False

    async def _run(
        self, make: Make[T], on_slow: Callable[[], Awaitable[None]], *, inline: bool
    ) -> T:
        if inline and self.alarm.available:
            call, began = make(), time.monotonic()
            try:
                return self.alarm.call(call)
            except InlineOverrun:
                took = time.monotonic() - began
                if took >= self.threads.budget_s:
                    # One C operation held the GIL past the whole budget (no signal can
                    # cut it short): an overrun, not to be run a second time in a thread.
                    raise Overrun(self.threads.budget_s, held_s=took) from None
                metrics.handling_offloaded.inc()  # again, in a thread, from fresh state
        return await self.threads.run(make(), on_slow)

    async def _failed(
        self,
        key: bytes,
        failure: Attempts,
        source: str,
        *,
        counted: bool,
        error: BaseException | None,
    ) -> None:
        """Count a failed attempt (unless it was counted while running and merely overran)."""
        overrun = failure.reason == TIMEOUT
        metrics.handling_failures.labels(outcome="overrun" if overrun else "error").inc()
        if not (counted and overrun) or failure.final:
            await self.book.count(key, failure)
        verb = "stopped" if counted and overrun else "failed" if counted else "counted"
        self._log(source, failure.count, f"{verb}: {failure.error}", error)

    def _log(self, source: str, count: int, what: str, error: BaseException | None = None) -> None:
        log.warning(
            "%s: attempt %d of %d %s", source, count, self.max_attempts, what, exc_info=error
        )

    def forget(self, key: bytes) -> None:
        """The record is quarantined (or was handled): its count is no longer needed."""
        self.book.clear(key)

    async def flush(self) -> None:
        """Send the counts' removals (`forget`, a success after failures) to the changelog."""
        await self.book.table.flush()


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:500]
