"""The inline path: a call past 50 ms is interrupted; nothing fires outside a call."""

from __future__ import annotations

import signal
import time

import pytest

from nudgeflow.agents.alarm import Alarm, InlineOverrun
from tests.unit.agents.test_watchdog import _spin, _spin_swallowing


def test_a_fast_call_returns_and_leaves_no_timer() -> None:
    alarm = Alarm(0.05)
    assert alarm.call(lambda: 42) == 42
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)


@pytest.mark.parametrize("runaway", [_spin, _spin_swallowing])
def test_a_runaway_is_interrupted_at_the_budget(runaway) -> None:  # type: ignore[no-untyped-def]
    alarm = Alarm(0.05)
    began = time.monotonic()
    with pytest.raises(InlineOverrun):
        alarm.call(lambda: runaway(5.0))
    assert time.monotonic() - began < 0.5
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
    _spin(0.1)  # no late alarm raises out here
    assert alarm.call(lambda: "next") == "next"


def test_an_exception_of_the_call_propagates_and_disarms() -> None:
    alarm = Alarm(0.05)
    with pytest.raises(ZeroDivisionError):
        alarm.call(lambda: 1 / 0)
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
    _spin(0.1)
