"""The breaker's state machine and its window, on an injected clock."""

from __future__ import annotations

from nudgeflow.config.destinations import DeliverySettings
from nudgeflow.delivery.breaker import Admission, BreakerPolicy, CircuitBreaker, State
from nudgeflow.delivery.window import FailureWindow
from nudgeflow.observability import metrics

POLICY = BreakerPolicy(window_s=60.0, min_calls=10, failure_ratio=0.7, reset_s=5.0)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def gauge(name: str) -> float | None:
    return metrics.REGISTRY.get_sample_value(
        "nudgeflow_circuit_breaker_state", {"destination": name}
    )


def breaker(name: str, clock: Clock, policy: BreakerPolicy = POLICY) -> CircuitBreaker:
    return CircuitBreaker(name, policy, clock)


def opened(name: str, clock: Clock) -> CircuitBreaker:
    """A breaker that just opened: 10 calls, all failed."""
    b = breaker(name, clock)
    for _ in range(POLICY.min_calls):
        b.record(False)
    assert b.state is State.OPEN
    return b


def test_window_counts_only_the_last_window() -> None:
    w = FailureWindow(60.0)
    for t in range(10):
        w.record(ok=t % 2 == 0, now=float(t))
    assert w.counts(9.0) == (10, 5) and w.ratio(9.0) == 0.5
    assert w.counts(62.0) == (7, 4)  # t=0,1,2 (one slice each) left the window
    assert w.counts(200.0) == (0, 0) and w.ratio(200.0) == 0.0


def test_needs_the_minimum_volume_before_it_opens() -> None:
    b = breaker("vol", Clock())
    for _ in range(9):
        b.record(False)
    assert b.state is State.CLOSED and b.admit() is Admission.CALL  # 9 of 9 failed: too few
    b.record(False)
    assert b.state is State.OPEN and b.admit() is Admission.WAIT
    assert gauge("vol") == 2


def test_a_ratio_below_the_threshold_never_opens() -> None:
    b = breaker("ratio", Clock())
    for n in range(100):
        b.record(n % 3 == 0)  # two thirds fail: 66.7% < 70%
    assert b.state is State.CLOSED
    assert abs(b.failure_ratio() - 0.66) < 0.01


def test_failures_older_than_the_window_do_not_count() -> None:
    clock = Clock()
    b = breaker("old", clock)
    for _ in range(9):
        b.record(False)
    clock.now += 61
    b.record(False)
    assert b.state is State.CLOSED  # the 9 earlier ones have left the window


def test_half_open_lets_exactly_one_probe_through() -> None:
    clock = Clock()
    b = opened("probe", clock)
    assert b.retry_in() == 5.0
    clock.now += 4.9
    assert b.admit() is Admission.WAIT
    clock.now += 0.1
    assert b.admit() is Admission.PROBE
    assert b.state is State.HALF_OPEN and gauge("probe") == 1
    assert b.admit() is Admission.WAIT and b.retry_in() is None  # one at a time
    b.record(False, probe=True)
    assert b.state is State.OPEN and b.retry_in() == 5.0  # failed probe: another reset


def test_a_probe_that_made_no_call_frees_the_slot() -> None:
    clock = Clock()
    b = opened("drop", clock)
    clock.now += 5
    assert b.admit() is Admission.PROBE
    b.drop_probe()
    assert b.admit() is Admission.PROBE


def test_recovery_closes_and_ramps_up_by_doubling() -> None:
    clock = Clock()
    b = opened("ramp", clock)
    clock.now += 5
    assert b.admit() is Admission.PROBE
    b.record(True, probe=True)
    assert b.state is State.CLOSED and gauge("ramp") == 0
    assert b.ramp == 1 and b.failure_ratio() == 0.0  # a fresh window
    ramps = []
    for _ in range(9):
        b.record(True)
        ramps.append(b.ramp)
    assert ramps == [2, 4, 8, 16, 32, 64, 128, None, None]


def test_outcomes_of_calls_from_before_the_trip_change_nothing() -> None:
    b = opened("late", Clock())
    b.record(True)  # a call that started while closed answers now
    assert b.state is State.OPEN


def test_policy_from_settings_and_the_legacy_name() -> None:
    settings = DeliverySettings(breaker_window="30s", breaker_failure_ratio=0.5)
    assert BreakerPolicy.from_settings(settings) == BreakerPolicy(30.0, 10, 0.5, 2.0)
    legacy = DeliverySettings(breaker_failures=3)  # the old "consecutive failures" key
    assert BreakerPolicy.from_settings(legacy).min_calls == 3
    both = DeliverySettings(breaker_failures=3, breaker_min_calls=20)
    assert BreakerPolicy.from_settings(both).min_calls == 20
