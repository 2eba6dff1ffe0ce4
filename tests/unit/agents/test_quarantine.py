"""A poison call is tried `max_attempts` times, each counted before the next starts."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from nudgeflow.agents.quarantine import Failed, Guard
from nudgeflow.agents.watchdog import EngineThreads
from nudgeflow.tables.attempts import ERROR, TIMEOUT, Attempts

KEY = b"r|events|0|7"
BUDGET_S = 1.5  # an overrun waits this long: wider than any loop wake-up lag under load
WAIT_S = 30.0  # for conditions that a loaded machine may take long to meet


class _Book:
    """The attempts table as a dict; `writes` is every durable count, in order."""

    def __init__(self) -> None:
        self.rows: dict[bytes, Attempts] = {}
        self.writes: list[Attempts] = []

    def get(self, key: bytes) -> Attempts | None:
        return self.rows.get(key)

    async def count(self, key: bytes, attempts: Attempts) -> None:
        self.rows[key] = attempts
        self.writes.append(attempts)

    def clear(self, key: bytes) -> None:
        self.rows.pop(key, None)


def _guard(book: _Book, budget_s: float = 1.0, mark_after_s: float = 0.05) -> Guard:
    threads = EngineThreads(budget_s, mark_after_s=mark_after_s)
    return Guard(book, threads, max_attempts=3)  # type: ignore[arg-type]


def _boom() -> Any:
    raise ValueError("poison")


def once(fn: Callable[[], Any]) -> Callable[[], Callable[[], Any]]:
    """A `make` that builds the same call each time (these calls change no state)."""
    return lambda: fn


async def _eventually(condition: Callable[[], bool]) -> bool:
    deadline = time.monotonic() + WAIT_S
    while not condition() and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    return condition()


async def test_a_raising_call_is_counted_each_time_and_final_at_the_third() -> None:
    book = _Book()
    guard = _guard(book)
    finals = []
    for _ in range(3):
        with pytest.raises(Failed) as failed:
            await guard.attempt(KEY, once(_boom), "test")
        finals.append(failed.value.final)
    assert finals == [False, False, True]
    assert [(a.count, a.reason) for a in book.writes] == [(1, ERROR), (2, ERROR), (3, ERROR)]
    assert "ValueError: poison" in book.rows[KEY].error

    ran = []
    with pytest.raises(Failed) as failed:  # a restart after the third: not run again
        await guard.attempt(KEY, once(lambda: ran.append(1)), "test")
    assert failed.value.final and ran == []


async def test_a_success_after_failures_forgets_the_count() -> None:
    book = _Book()
    guard = _guard(book)
    with pytest.raises(Failed):
        await guard.attempt(KEY, once(_boom), "test")
    assert await guard.attempt(KEY, once(lambda: "ok"), "test") == "ok"
    assert KEY not in book.rows


async def test_a_long_call_is_counted_while_it_runs_and_forgotten_if_it_finishes() -> None:
    book = _Book()
    guard = _guard(book, budget_s=WAIT_S)
    seen: list[Attempts | None] = []

    def slow() -> str:
        # Runs until counted (a fixed sleep lost the race to a loop woken late by load);
        # inline, the 50 ms alarm cuts it short first: the count is made off the loop.
        deadline = time.monotonic() + WAIT_S
        while KEY not in book.rows and time.monotonic() < deadline:
            time.sleep(0.01)
        seen.append(book.rows.get(KEY))  # counted before the call ended
        return "done"

    assert await guard.attempt(KEY, once(slow), "test") == "done"
    assert seen == [Attempts(count=1, reason=TIMEOUT, error="still running")]
    assert KEY not in book.rows


async def test_an_overrun_is_counted_once_and_stopped(caplog: pytest.LogCaptureFixture) -> None:
    """The budget is wide on purpose: the loop waking that late (a loaded machine, the
    spinning thread holding the GIL) reads as "held the event loop", a different outcome
    (final at once). 0.2 s was broken by load; the test spins for the whole budget."""
    book = _Book()
    guard = _guard(book, budget_s=BUDGET_S)
    ended: list[threading.Event] = []  # one per build: inline (alarm), then in a thread

    def make() -> Callable[[], None]:
        done = threading.Event()
        ended.append(done)

        def spin() -> None:
            try:
                while True:
                    pass
            finally:
                done.set()

        return spin

    with pytest.raises(Failed) as failed:
        await guard.attempt(KEY, make, "events[0]@7")
    assert failed.value.attempts.reason == TIMEOUT and not failed.value.final
    assert "still running" in failed.value.attempts.error
    assert [a.count for a in book.writes] == [1]
    assert [r.getMessage() for r in caplog.records if "events[0]@7" in r.getMessage()] == [
        "events[0]@7: attempt 1 of 3 counted: still running after 0.05 s",
        f"events[0]@7: attempt 1 of 3 stopped: still running, over the handling budget of "
        f"{BUDGET_S:g} s",
    ]
    assert len(ended) == 2 and all(done.wait(WAIT_S) for done in ended)  # stopped, both
    assert await _eventually(lambda: guard.threads.stuck == 0)


async def test_a_fast_call_runs_inline_and_a_slow_one_again_in_a_thread_from_fresh_state() -> None:
    book = _Book()
    guard = _guard(book, budget_s=WAIT_S, mark_after_s=WAIT_S)  # never counted, even if slow
    built: list[int] = []

    def make() -> Callable[[], tuple[int, bool]]:
        built.append(len(built))
        first = len(built) == 1

        def call() -> tuple[int, bool]:
            inline = threading.current_thread() is threading.main_thread()
            if first:
                time.sleep(0.2)  # past the 50 ms alarm: interrupted, then built again
            return len(built), inline

        return call

    on_the_loop = once(lambda: threading.current_thread() is threading.main_thread())
    assert await guard.attempt(KEY, on_the_loop, "test") is True
    assert await guard.attempt(KEY, make, "test") == (2, False)
    assert book.writes == []  # neither was an attempt that failed or ran long


async def test_a_call_holding_the_gil_past_the_budget_is_one_counted_overrun() -> None:
    """One C loop that keeps the GIL and checks no signal (`sum` over 30 million ints,
    0.3-0.7 s): nothing cuts it short, and running it again would hold the loop again."""
    book = _Book()
    guard = _guard(book, budget_s=0.1)
    built: list[int] = []

    def make() -> Callable[[], int]:
        built.append(1)
        return lambda: sum(range(30_000_000))

    with pytest.raises(Failed) as failed:
        await guard.attempt(KEY, make, "test")
    assert failed.value.final and failed.value.attempts.reason == TIMEOUT
    assert "held the event loop" in failed.value.attempts.error
    assert built == [1]  # not run a second time in a thread, nor a third time
    assert [(a.count, a.final) for a in book.writes] == [(1, True)]
    with pytest.raises(Failed) as again:  # after a restart: quarantined without a run
        await guard.attempt(KEY, make, "test")
    assert again.value.final and built == [1]


async def test_a_thread_call_that_ends_after_the_budget_is_final_too() -> None:
    book = _Book()
    book.rows[KEY] = Attempts(count=1, reason=ERROR)  # failed before: straight to a thread
    guard = _guard(book, budget_s=0.1)
    with pytest.raises(Failed) as failed:
        await guard.attempt(KEY, once(lambda: sum(range(30_000_000))), "test")
    assert failed.value.final and failed.value.attempts.count == 2
    # Its thread ends once the C call returns; waited for, so that it does not outlive the
    # test (last in a run, it met a closed loop: "Event loop is closed" in engine-1).
    assert await _eventually(lambda: guard.threads.stuck == 0)
