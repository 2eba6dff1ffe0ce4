"""The fast path of an engine call: on the event loop, under a short alarm (issue 21.2).

Why not always a thread (agents/watchdog.py): while the loop is busy, each hop to a thread
and back waits for the GIL's switch interval, ~0.5 ms a call against ~0.06 ms inline,
which cost the worker a third of its throughput (docs/reliability.md, "Hostile input").
So a call first runs inline under a SIGALRM timer of INLINE_BUDGET_S; nearly every call
ends well within it. One that does not is interrupted (the handler raises at its next
bytecode) and run again in a thread, where it may take the whole handling budget without
holding the loop. No record holds the loop longer than INLINE_BUDGET_S, except with one
C operation, which no signal interrupts (the engine's budgets refuse those).

The worker owns SIGALRM. The handler is one-shot: it disarms, then raises, and only
while a call is armed, so it can never raise in the loop's own code. If the raise is
swallowed (it landed in a `__del__`), the call's result is discarded all the same.
Faust's blocking detector also uses SIGALRM but runs only in Faust's debug mode, which
the worker never turns on. Signals run on the main thread only: elsewhere (`available`
False) every call goes to a thread.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import TypeVar

T = TypeVar("T")

INLINE_BUDGET_S = 0.05  # /health must answer within 100 ms whatever a record does


class InlineOverrun(BaseException):
    """The call ran past the inline budget. A BaseException, so the engine's own
    `except Exception` (a failed render becomes a decision) does not swallow it."""


class Alarm:
    """Runs a call on the current (main) thread, interrupted past `budget_s`."""

    def __init__(self, budget_s: float = INLINE_BUDGET_S) -> None:
        self.budget_s = budget_s
        self._armed = False
        self._fired = False
        self._installed = False

    @property
    def available(self) -> bool:
        return threading.current_thread() is threading.main_thread()

    def call(self, fn: Callable[[], T]) -> T:
        """`fn()`, or `InlineOverrun` if it ran past the budget (its result is dropped)."""
        if not self._installed:
            signal.signal(signal.SIGALRM, self._on_alarm)
            self._installed = True
        self._fired = False
        try:
            try:
                self._armed = True
                signal.setitimer(signal.ITIMER_REAL, self.budget_s)
                result = fn()
            finally:
                self._disarm()
        except InlineOverrun:
            self._disarm()  # the raise may have cut the `finally` short
            raise
        if self._fired:  # the handler's raise was swallowed somewhere inside `fn`
            raise InlineOverrun
        return result

    def _disarm(self) -> None:
        self._armed = False
        signal.setitimer(signal.ITIMER_REAL, 0)

    def _on_alarm(self, signum: int, frame: FrameType | None) -> None:
        if not self._armed:
            return
        self._disarm()
        self._fired = True
        raise InlineOverrun
