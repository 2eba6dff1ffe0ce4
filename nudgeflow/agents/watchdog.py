"""The slow path of an engine call: off the event loop, under a wall-clock budget (21.2).

Why a thread: the event loop serves `/health`, ingestion, deliveries and the consumer's
rebalance callbacks. One event whose handling ran 25 s on it stalled all of them
(docs/reliability.md, "Hostile input"). The engine is pure (state and event in, a step
out), so a call that did not finish within the inline alarm (agents/alarm.py; nearly
all do) runs again in a thread, and the loop goes on meanwhile. Not every call: a hop
to a thread costs ~0.5 ms on a busy loop (the GIL's switch interval).

Why an interrupt: a call past its budget is abandoned, and its thread is told to stop:
`PyThreadState_SetAsyncExc` raises `Stopped` in it at its next bytecode, so a runaway
render (Jinja templates are compiled to Python) ends at once instead of burning a core
for its remaining seconds. It cannot cut short one C operation that holds the GIL
(a huge `**`, a 200 MB `%`): the engine's budgets refuse those before they start
(engine/sandbox/); nothing in-process can preempt them.

Why retire the thread: a stop request may land just after its call ended, anywhere in
that thread. A thread that got one never takes another call, so a late stop can only
end the thread that was meant to stop. No locks: the pool is touched by the loop only.

Bounded: at most `max_threads` threads (a call stuck in C keeps one until it returns);
when all are stuck, a new call waits for one, and the budget starts when it runs.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import queue
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")

MARK_AFTER_S = 0.25  # a call still running this long is counted before it goes on
MAX_THREADS = 4
_SATURATED_POLL_S = 0.05


class Overrun(Exception):
    """The call ran past its budget; it was abandoned and its thread told to stop.

    `held_s`: it ended by itself, but only after holding the GIL (the event loop) that
    long, past the budget: one C operation, which nothing in-process can cut short."""

    def __init__(self, budget_s: float, held_s: float | None = None) -> None:
        what = f"held the event loop {held_s:.1f} s" if held_s else "still running"
        super().__init__(f"{what}, over the handling budget of {budget_s:g} s")
        self.budget_s = budget_s
        self.held_s = held_s


class Stopped(BaseException):
    """Raised inside an abandoned call. A BaseException, so that the engine's own
    `except Exception` (a failed render becomes a decision) does not swallow it."""


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.done():
        return  # abandoned
    if error is None:
        future.set_result(result)
    else:
        future.set_exception(error)


@dataclass(slots=True)
class _Call:
    fn: Callable[[], Any]
    future: asyncio.Future[Any]
    loop: asyncio.AbstractEventLoop

    def run(self) -> None:
        try:
            result = self.fn()
        except BaseException as exc:  # Stopped included: the future is abandoned then
            self.loop.call_soon_threadsafe(_settle, self.future, None, exc)
        else:
            self.loop.call_soon_threadsafe(_settle, self.future, result, None)


class _Thread:
    """One thread taking calls from its own queue until it is retired."""

    def __init__(self, number: int) -> None:
        self.calls: queue.SimpleQueue[_Call | None] = queue.SimpleQueue()
        self.thread = threading.Thread(target=self._main, name=f"engine-{number}", daemon=True)
        self.thread.start()

    def _main(self) -> None:
        try:
            while (call := self.calls.get()) is not None:
                call.run()
        except Stopped:  # a stop that landed after its call: this thread is retired
            pass

    def stop(self) -> None:
        """Raise `Stopped` in the thread, then end its loop (it may be idle already)."""
        ident = self.thread.ident
        if ident is not None:
            ctypes.pythonapi.PyThreadState_SetAsyncExc(
                ctypes.c_ulong(ident), ctypes.py_object(Stopped)
            )
        self.calls.put(None)


class EngineThreads:
    """Run pure calls in threads, each stopped when it runs past `budget_s`."""

    def __init__(
        self,
        budget_s: float,
        *,
        mark_after_s: float = MARK_AFTER_S,
        max_threads: int = MAX_THREADS,
    ) -> None:
        self.budget_s = budget_s
        self.mark_after_s = min(mark_after_s, budget_s)
        self.max_threads = max_threads
        self._idle: list[_Thread] = []
        self._all: list[_Thread] = []
        self._started = 0

    @property
    def stuck(self) -> int:
        """Abandoned calls whose threads have not ended yet (stuck in C, or ending)."""
        alive = sum(t.thread.is_alive() for t in self._all)
        return alive - len(self._idle)

    async def run(self, fn: Callable[[], T], on_slow: Callable[[], Awaitable[None]]) -> T:
        """`fn()` in a thread. Past `mark_after_s` it awaits `on_slow()` (the caller counts
        the attempt durably while the call goes on); past `budget_s` it raises `Overrun`.
        If the loop itself could not run for `budget_s` meanwhile (the call held the GIL
        in one C operation), `Overrun.held_s` says so, whether or not the call ended.
        The call's own exception propagates; so does one from `on_slow` (the call is
        then abandoned: it was not counted)."""
        worker = await self._take()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        began = loop.time()
        held = _Lag(loop)
        worker.calls.put(_Call(fn, future, loop))
        try:
            if not await held.wait(future, self.mark_after_s):
                await on_slow()
                await held.wait(future, self.budget_s - (loop.time() - began))
            if held.lag_s >= self.budget_s:
                raise Overrun(self.budget_s, held_s=held.lag_s)
            if not future.done():
                raise Overrun(self.budget_s)
        except BaseException:
            if not future.done():
                self._abandon(worker, future)
            raise
        self._idle.append(worker)
        return future.result()

    async def _take(self) -> _Thread:
        warned = False
        while True:
            if self._idle:
                return self._idle.pop()
            self._all = [t for t in self._all if t.thread.is_alive()]
            if len(self._all) < self.max_threads:
                self._started += 1
                worker = _Thread(self._started)
                self._all.append(worker)
                return worker
            if not warned:
                log.warning("all %d engine threads are stuck in abandoned calls", len(self._all))
                warned = True
            await asyncio.sleep(_SATURATED_POLL_S)

    def _abandon(self, worker: _Thread, future: asyncio.Future[Any]) -> None:
        future.cancel()
        worker.stop()


class _Lag:
    """How late the loop woke up from its waits: time it could not run (the GIL held)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.lag_s = 0.0

    async def wait(self, future: asyncio.Future[Any], timeout: float) -> bool:
        """Whether `future` is done within `timeout` (seconds, may be <= 0)."""
        if not future.done() and timeout > 0:
            start = self.loop.time()
            await asyncio.wait((future,), timeout=timeout)
            self.lag_s += max(0.0, self.loop.time() - start - timeout)
        return future.done()
