"""The heap report names the code that grew, and refuses a bad setting at start."""

from __future__ import annotations

import tracemalloc

import pytest

from nudgeflow.observability.heap import ENV, HeapTrace

_kept: list[bytes] = []


def _grow() -> None:
    _kept.extend(bytes(1000) + bytes([i % 256]) for i in range(2000))


def test_off_by_default_and_says_how_to_turn_it_on() -> None:
    tracemalloc.stop()  # in case the interpreter was started with -X tracemalloc
    trace = HeapTrace.from_env({})
    trace.start()
    assert not tracemalloc.is_tracing()
    assert trace.report() == f"heap tracing is off; start the worker with {ENV}=<frames> to trace"


@pytest.mark.parametrize("raw", ["yes", "0", "101", "-3"])
def test_a_bad_setting_names_the_variable(raw: str) -> None:
    with pytest.raises(ValueError, match=f"{ENV} must be a number of frames from 1 to 100"):
        HeapTrace.from_env({ENV: raw})


def test_report_shows_the_growth_since_the_last_one() -> None:
    trace = HeapTrace.from_env({ENV: "1"})
    trace.start()
    try:
        _grow()
        first = trace.report()
        assert first.startswith("heap traced ")
        site = f"test_heap.py:{_grow.__code__.co_firstlineno + 1}"
        top = first.splitlines()[1]
        assert top.endswith(site), first  # the line in _grow that kept ~2 MB
        assert float(top.split()[0]) > 1900  # KiB, 2000 blocks of ~1 KB
        second = trace.report()  # nothing new since: the site did not grow again
        assert not any(
            line.endswith(site) and line.split()[0] != "+0.0" for line in second.splitlines()[1:]
        )
    finally:
        tracemalloc.stop()
        _kept.clear()
