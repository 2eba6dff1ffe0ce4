"""A failed probe's verdict (delivery/dispatch.py): the delivery waits for the next probe,
and dies only past both its attempts and the retry schedule's span."""

from __future__ import annotations

from nudgeflow.config.destinations import DeliverySettings
from nudgeflow.delivery.dispatch import Dispatcher
from nudgeflow.delivery.retry import AttemptResult, Outcome
from nudgeflow.delivery.sender import Sender

SETTINGS = DeliverySettings(retry_schedule=["1s", "2s", "3s"], jitter=0)  # 4 attempts, 6 s
FAILED = AttemptResult(503, None, 0.01)


def verdict(attempt: int, age_s: float, result: AttemptResult = FAILED) -> tuple[object, ...]:
    step = Dispatcher({}, SETTINGS, Sender()).decide(result, "d", attempt, probe=True, age_s=age_s)
    return step.outcome, step.reason, step.delay_s, step.probe


def test_a_failed_probe_waits_again_without_a_delay() -> None:
    assert verdict(2, 1.0) == (Outcome.RETRY, "status_503", None, True)


def test_out_of_attempts_but_younger_than_the_schedule_still_waits() -> None:
    assert verdict(4, 5.9) == (Outcome.RETRY, "status_503", None, True)
    assert verdict(9, 5.9)[0] is Outcome.RETRY


def test_out_of_attempts_and_older_than_the_schedule_is_dead() -> None:
    assert verdict(4, 6.0) == (Outcome.DEAD, "retries_exhausted", None, False)


def test_a_call_after_the_circuit_closed_gets_the_last_delay_while_young() -> None:
    d = Dispatcher({}, SETTINGS, Sender())
    young = d.decide(FAILED, "d", 7, age_s=2.0)  # 6 probes spent its attempts early
    assert (young.outcome, young.delay_s, young.tier) == (Outcome.RETRY, 3.0, 2)
    assert d.decide(FAILED, "d", 7, age_s=6.0).outcome is Outcome.DEAD
    assert d.decide(FAILED, "d", 4).outcome is Outcome.DEAD  # age unknown: attempts alone


def test_a_probe_the_endpoint_refuses_for_good_is_dead_at_once() -> None:
    assert verdict(1, 0.0, AttemptResult(410, None, 0.01))[:2] == (Outcome.DEAD, "gone")
