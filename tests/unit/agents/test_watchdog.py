"""Engine calls run off the event loop, and one past its budget is stopped, not waited for."""

from __future__ import annotations

import asyncio
import time

import pytest

from nudgeflow.agents.watchdog import EngineThreads, Overrun


async def _never() -> None:
    raise AssertionError("on_slow called for a fast call")


def _spin(seconds: float) -> str:
    """Python bytecode for `seconds`, as a runaway render is."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass
    return "finished"


def _spin_swallowing(seconds: float) -> str:
    """A runaway that catches Exception, as the engine does around a render."""
    try:
        return _spin(seconds)
    except Exception:
        return "swallowed"


class _Slow:
    def __init__(self) -> None:
        self.calls = 0

    async def __call__(self) -> None:
        self.calls += 1


async def _wait_until(condition, timeout: float = 5.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met"
        await asyncio.sleep(0.01)


async def test_a_call_returns_its_result_and_its_thread_is_reused() -> None:
    threads = EngineThreads(1.0)
    assert await threads.run(lambda: 41 + 1, _never) == 42
    with pytest.raises(ZeroDivisionError):
        await threads.run(lambda: 1 / 0, _never)
    assert await threads.run(lambda: "again", _never) == "again"
    assert len(threads._all) == 1 and threads.stuck == 0


@pytest.mark.parametrize("runaway", [_spin, _spin_swallowing])
async def test_a_runaway_call_is_counted_then_stopped_and_its_thread_ends(runaway) -> None:  # type: ignore[no-untyped-def]
    threads = EngineThreads(0.3, mark_after_s=0.05)
    slow = _Slow()
    began = time.monotonic()
    with pytest.raises(Overrun):
        await threads.run(lambda: runaway(30.0), slow)
    assert 0.3 <= time.monotonic() - began < 1.0
    assert slow.calls == 1
    await _wait_until(lambda: threads.stuck == 0)  # stopped at its next bytecode, not in 30 s
    assert await threads.run(lambda: "next", _never) == "next"


async def test_the_event_loop_keeps_running_while_a_call_spins() -> None:
    threads = EngineThreads(1.0, mark_after_s=1.0)
    lags: list[float] = []

    async def ticker() -> None:
        while True:
            began = time.monotonic()
            await asyncio.sleep(0.01)
            lags.append(time.monotonic() - began - 0.01)

    task = asyncio.ensure_future(ticker())
    try:
        assert await threads.run(lambda: _spin(0.5), _never) == "finished"
    finally:
        task.cancel()
    assert len(lags) > 10 and max(lags) < 0.1, max(lags)


async def test_a_failure_to_count_abandons_the_call_and_propagates() -> None:
    threads = EngineThreads(5.0, mark_after_s=0.05)

    async def broker_down() -> None:
        raise ConnectionError("no broker")

    with pytest.raises(ConnectionError):
        await threads.run(lambda: _spin(30.0), broker_down)
    await _wait_until(lambda: threads.stuck == 0)


async def test_calls_stuck_in_c_hold_their_thread_and_later_calls_wait_for_one() -> None:
    threads = EngineThreads(0.1, mark_after_s=0.1, max_threads=1)
    with pytest.raises(Overrun):
        await threads.run(lambda: time.sleep(0.6), _Slow())  # C: cannot be interrupted
    assert threads.stuck == 1
    began = time.monotonic()
    assert await threads.run(lambda: "after", _never) == "after"
    assert time.monotonic() - began > 0.3  # it waited for the stuck thread to end
