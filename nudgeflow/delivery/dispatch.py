"""One delivery attempt end to end, minus Kafka: breaker, HTTP, verdict, delay.

The deliver agent feeds it (trigger, destination, attempt number) and acts on
the returned `Step` (mark delivered, produce a retry record, dead-letter).
Keeping it free of Faust makes the whole policy testable against real HTTP
receivers without a broker.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Mapping
from dataclasses import dataclass

from nudgeflow.config.destinations import DeliverySettings, Destination
from nudgeflow.delivery.breaker import Breakers
from nudgeflow.delivery.payload import encode_payload
from nudgeflow.delivery.retry import AttemptResult, Outcome, RetryPolicy, classify
from nudgeflow.delivery.sender import Sender
from nudgeflow.engine.actions import Trigger
from nudgeflow.observability import metrics

# One warning per failed attempt (README, "Logs"); its own logger so it can be routed.
delivery_log = logging.getLogger("nudgeflow.deliveries")


@dataclass(frozen=True)
class Step:
    attempt: int
    result: AttemptResult
    outcome: Outcome
    reason: str  # verdict reason, or "retries_exhausted" when out of attempts
    delay_s: float | None = None  # for RETRY
    tier: int | None = None  # retry topic tier for RETRY


class Dispatcher:
    def __init__(
        self,
        destinations: Mapping[str, Destination],
        settings: DeliverySettings,
        sender: Sender,
        *,
        breakers: Breakers | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.destinations = destinations
        self.policy = RetryPolicy.from_settings(settings)
        self.sender = sender
        self.breakers = breakers or Breakers(settings.breaker_failures, settings.breaker_reset_s)
        self.rng = rng or random.Random()

    async def attempt(self, trigger: Trigger, name: str, attempt: int) -> Step:
        dest = self.destinations.get(name)
        if dest is None:
            result = AttemptResult(None, "unknown_destination", 0.0)
        else:
            breaker = self.breakers[name]
            body = encode_payload(trigger)
            result = await self.sender.attempt(
                name, dest, trigger.trigger_id, body, admit=breaker.allow
            )
            if result.error_class != "circuit_open":
                if classify(result).outcome is Outcome.RETRY:
                    breaker.record_failure()
                else:
                    breaker.record_success()  # it answered: 2xx, or a 4xx only we can fix
        return self.decide(result, name, attempt)

    def decide(self, result: AttemptResult, name: str, attempt: int) -> Step:
        verdict = classify(result)
        if verdict.outcome is Outcome.RETRY:
            delay = self.policy.next_delay(attempt, result.retry_after_s, self.rng)
            if delay is None:
                metrics.deliveries.labels(destination=name, outcome="dead").inc()
                return Step(attempt, result, Outcome.DEAD, "retries_exhausted")
            metrics.delivery_retries.labels(destination=name).inc()
            return Step(
                attempt, result, Outcome.RETRY, verdict.reason, delay, self.policy.tier_for(delay)
            )
        metrics.deliveries.labels(destination=name, outcome=verdict.outcome.value).inc()
        return Step(attempt, result, verdict.outcome, verdict.reason)


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
