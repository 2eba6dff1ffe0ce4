"""One delivery attempt end to end, minus Kafka: gate, HTTP, verdict, delay.

The deliver agent feeds it (trigger, destination, attempt number) and acts on
the returned `Step` (mark delivered, produce a retry record, dead-letter, or park
the delivery until the circuit's probe). A deferred step made no call, so it spends
no attempt: `Step.attempt` is then the number of calls made so far.

A failed probe is the destination's failure more than the delivery's: the circuit
opens again and the delivery goes back to wait for the next probe (`Step.probe`, no
delay). The call counts as an attempt, but it dead-letters the delivery only once it
has used its attempts *and* is older than the retry schedule's span, so probing never
makes a delivery die sooner than its retries would have. After an outage of any length
the deliveries are therefore all waiting for the circuit, not minutes or hours into
their retry schedules, and go out as soon as it closes.

Keeping it free of Faust makes the whole policy testable against real HTTP receivers
without a broker.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

from nudgeflow.config.destinations import DeliverySettings, Destination
from nudgeflow.delivery.breaker import BreakerPolicy
from nudgeflow.delivery.gate import Gate, Pass
from nudgeflow.delivery.payload import encode_payload
from nudgeflow.delivery.retry import NO_CALL_ERRORS, AttemptResult, Outcome, RetryPolicy, classify
from nudgeflow.delivery.sender import Sender
from nudgeflow.delivery.share import Share
from nudgeflow.engine.actions import Trigger
from nudgeflow.observability import metrics
from nudgeflow.observability.metrics import Sample

# One warning per failed attempt (README, "Logs"); its own logger so it can be routed.
delivery_log = logging.getLogger("nudgeflow.deliveries")

_NOT_CALLED = AttemptResult(None, "circuit_open", 0.0)


class Abandoned(Exception):
    """The worker gave the record back (rebalance, shutdown) before any call: it is not
    acknowledged, and whoever owns the partition next delivers it."""


@dataclass(frozen=True)
class Step:
    attempt: int
    result: AttemptResult
    outcome: Outcome
    reason: str  # verdict reason, or "retries_exhausted" when out of attempts
    delay_s: float | None = None  # for RETRY (None after a probe: wait for the next one)
    tier: int | None = None  # retry topic tier for RETRY
    probe: bool = False  # this call was the half-open circuit's probe


def _always() -> bool:
    return True


class Dispatcher:
    def __init__(
        self,
        destinations: Mapping[str, Destination],
        settings: DeliverySettings,
        sender: Sender,
        *,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.policy = RetryPolicy.from_settings(settings)
        self.sender = sender
        breaker_policy = BreakerPolicy.from_settings(settings)
        self.gates = {
            name: Gate(name, dest, breaker_policy, clock) for name, dest in destinations.items()
        }
        self.rng = rng or random.Random()

    def reshare(self, share: Share) -> None:
        for gate in self.gates.values():
            gate.reshare(share)

    async def attempt(
        self,
        trigger: Trigger,
        name: str,
        attempt: int,
        *,
        admitted: Pass | None = None,
        may_call: Callable[[], bool] = _always,
        age_s: float | None = None,
    ) -> Step:
        """Call once if the gate lets us (`admitted`: a pass the caller already holds).

        `may_call` is asked last, right before the request: False raises `Abandoned`.
        `age_s`: since the delivery's first attempt (a failed probe's verdict needs it).
        """
        gate = self.gates.get(name)
        if gate is None:
            return self.decide(AttemptResult(None, "unknown_destination", 0.0), name, attempt)
        ticket = admitted if admitted is not None else await gate.enter(park=True)
        if ticket is None:
            return self._deferred(name, attempt)
        ok: bool | None = None
        probe = ticket.probe
        try:
            await gate.pace()
            if not ticket.valid:  # the circuit opened while we waited for the rate
                return self._deferred(name, attempt)
            if not may_call():
                raise Abandoned(trigger.trigger_id)
            body = encode_payload(trigger)
            result = await self.sender.attempt(name, gate.dest, trigger.trigger_id, body)
            if result.error_class not in NO_CALL_ERRORS:
                ok = classify(result).outcome is not Outcome.RETRY
        finally:
            ticket.done(ok)
        return self.decide(result, name, attempt, probe=probe, age_s=age_s)

    def _deferred(self, name: str, attempt: int) -> Step:
        metrics.delivery_deferrals.labels(destination=name).inc()
        return Step(attempt - 1, _NOT_CALLED, Outcome.DEFERRED, "circuit_open")

    def decide(
        self,
        result: AttemptResult,
        name: str,
        attempt: int,
        *,
        probe: bool = False,
        age_s: float | None = None,
    ) -> Step:
        """The verdict on a call. A delivery is out of retries once it has used its
        attempts and (when its `age_s` is known) is older than the schedule's span: calls
        made as probes never end it sooner than its retries would have."""
        verdict = classify(result)
        if verdict.outcome is not Outcome.RETRY:
            metrics.deliveries.labels(destination=name, outcome=verdict.outcome.value).inc()
            return Step(attempt, result, verdict.outcome, verdict.reason, probe=probe)
        policy = self.policy
        if attempt >= policy.max_attempts and (age_s is None or age_s >= policy.span_s):
            metrics.deliveries.labels(destination=name, outcome="dead").inc()
            return Step(attempt, result, Outcome.DEAD, "retries_exhausted")
        metrics.delivery_retries.labels(destination=name).inc()
        if probe:  # the circuit is open again: wait for the next probe
            return Step(attempt, result, Outcome.RETRY, verdict.reason, probe=True)
        step = min(attempt, policy.max_attempts - 1)  # past it (probes): the last delay
        delay = policy.next_delay(step, result.retry_after_s, self.rng)
        assert delay is not None
        return Step(attempt, result, Outcome.RETRY, verdict.reason, delay, policy.tier_for(delay))

    def failure_ratios(self) -> Iterator[Sample]:
        """(destination,) -> the breaker's failure ratio over its window, now."""
        for name, gate in sorted(self.gates.items()):
            yield (name,), gate.breaker.failure_ratio()


def log_delivery_failure(trigger: Trigger, destination: str, step: Step) -> None:
    """One warning per failed webhook attempt: destination name and classes, never the URL."""
    delivery_log.warning(
        "delivery failed",
        extra={
            "trigger_id": trigger.trigger_id,
            "rule": trigger.rule,
            "destination": destination,
            "attempt": step.attempt,
            "outcome": step.outcome.value,
            "status": step.result.label,
            "reason": step.reason,
            "retry_in_s": None if step.delay_s is None else round(step.delay_s, 3),
        },
    )
