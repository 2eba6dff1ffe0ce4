from nudgeflow.delivery.breaker import Breakers, CircuitBreaker, State
from nudgeflow.observability import metrics


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def gauge(name: str) -> float | None:
    return metrics.REGISTRY.get_sample_value(
        "nudgeflow_circuit_breaker_state", {"destination": name}
    )


def test_opens_after_consecutive_failures_only() -> None:
    b = CircuitBreaker("d1", failures=3, reset_s=30, clock=Clock())
    b.record_failure()
    b.record_failure()
    b.record_success()  # resets the count
    b.record_failure()
    b.record_failure()
    assert b.allow() and b.state is State.CLOSED
    b.record_failure()
    assert b.state is State.OPEN and not b.allow()
    assert gauge("d1") == 2


def test_half_open_lets_one_probe_then_closes_on_success() -> None:
    clock = Clock()
    b = CircuitBreaker("d2", failures=1, reset_s=30, clock=clock)
    b.record_failure()
    clock.now += 29
    assert not b.allow()
    clock.now += 1
    assert b.allow()  # the probe
    assert b.state is State.HALF_OPEN and gauge("d2") == 1
    assert not b.allow()  # only one probe at a time
    b.record_success()
    assert b.state is State.CLOSED and b.allow() and gauge("d2") == 0


def test_failed_probe_reopens_for_a_full_reset_period() -> None:
    clock = Clock()
    b = CircuitBreaker("d3", failures=2, reset_s=10, clock=clock)
    b.record_failure()
    b.record_failure()
    clock.now += 10
    assert b.allow()
    b.record_failure()
    assert b.state is State.OPEN
    clock.now += 9
    assert not b.allow()
    clock.now += 1
    assert b.allow()


def test_breakers_are_per_destination() -> None:
    breakers = Breakers(failures=1, reset_s=5, clock=Clock())
    breakers["bad"].record_failure()
    assert not breakers["bad"].allow()
    assert breakers["good"].allow()
    assert breakers["bad"] is breakers["bad"]
