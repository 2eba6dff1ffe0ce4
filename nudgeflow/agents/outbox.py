"""What the deliver agent writes to Kafka besides table marks, and the `Job` it writes about.

Every record that settles a delivery (a retry, a parked delivery, a dead letter) is
awaited until Kafka acknowledged it before the source record is acked, so a crash
re-reads the source rather than losing the delivery. The audit record of an attempt
(`<prefix>.deliveries`, and the user's timeline) is sent without waiting.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from nudgeflow.delivery.dispatch import Step
from nudgeflow.delivery.records import (
    DeliveryAttempt,
    RetryHeaders,
    dlq_headers,
    encode_attempt,
    wait_topic,
)
from nudgeflow.delivery.retry import Outcome
from nudgeflow.engine.actions import Trigger, decode_trigger
from nudgeflow.engine.timefmt import iso_utc
from nudgeflow.observability import metrics
from nudgeflow.observability.clock import now_ms
from nudgeflow.tables import timeline as timeline_table

if TYPE_CHECKING:
    from faust.types import EventT

    from nudgeflow.pipeline.runtime import Runtime

log = logging.getLogger(__name__)


def value_of(event: EventT) -> bytes:
    return event.message.value or b""


def headers_of(event: EventT) -> Mapping[str, bytes]:
    raw: Any = event.headers or {}
    return raw if isinstance(raw, Mapping) else dict(raw)


@dataclass(frozen=True)
class Job:
    """One (trigger, destination) delivery as read from a record."""

    trigger: Trigger
    raw: bytes
    user_key: bytes
    name: str
    attempt: int  # the attempt a call now would be (calls made so far + 1)
    first_attempt_ms: int
    source: str  # "trigger", "retry" or "wait"
    replay: bool = False
    last_status: str = ""

    @classmethod
    def from_retry(cls, event: EventT, source: str) -> Job:
        """From a retry-tier or wait-topic record: the trigger plus `RetryHeaders`."""
        meta = RetryHeaders.decode(headers_of(event))
        trigger = decode_trigger(value_of(event))
        return cls(
            trigger,
            value_of(event),
            event.message.key or trigger.user_id.encode(),
            meta.destination,
            meta.attempt + 1,
            meta.first_attempt_at_ms,
            source,
            last_status=meta.last_status,
        )


class Outbox:
    def __init__(self, rt: Runtime) -> None:
        self.topics = rt.topics
        self.records = rt.sender
        self.timeline = rt.timeline_direct  # per-user audit (tables/timeline.py)

    async def _send(
        self, topic: str, key: bytes, value: bytes, headers: Mapping[str, bytes] | None
    ) -> Any:
        """Send; returns the delivery future (await it to know Kafka has it)."""
        header_list = list(headers.items()) if headers else None
        return await self.records.send(topic, key, value, None, header_list)

    async def audit(self, job: Job, step: Step, *, timeline: bool = True) -> None:
        """One attempt (a call that was made) on `<prefix>.deliveries` and the timeline
        (not for an erased user's: the timeline is gone and stays gone)."""
        record = DeliveryAttempt(
            trigger_id=job.trigger.trigger_id,
            rule=job.trigger.rule,
            destination=job.name,
            attempt=step.attempt,
            outcome=step.outcome.value,
            latency_s=round(step.result.latency_s, 6),
            at=iso_utc(now_ms()),
            status=step.result.status,
            error=step.result.error_class,
            reason=step.reason,
        )
        await self._send(self.topics.deliveries, job.user_key, encode_attempt(record), None)
        if not timeline:
            return
        # The task runs in the trigger's event context: the write goes to its partition.
        timeline_table.record_delivery(self.timeline, job.user_key, record)
        await self.timeline.flush()

    async def forget(self, user_key: bytes) -> None:
        """The user's timeline row: a tombstone in its changelog (tables/erasure.py)."""
        self.timeline.pop(user_key, None)
        await self.timeline.flush()

    async def retry(self, job: Job, step: Step) -> None:
        assert step.delay_s is not None and step.tier is not None
        meta = RetryHeaders(
            destination=job.name,
            attempt=step.attempt,
            first_attempt_at_ms=job.first_attempt_ms,
            not_before_ms=now_ms() + int(step.delay_s * 1000),
            last_status=step.result.label,
            last_error=step.reason,
        )
        topic = self.topics.triggers_retry(step.tier)
        await (await self._send(topic, job.user_key, job.raw, meta.encode()))

    async def park(self, job: Job, step: Step) -> None:
        """Wait in Kafka for the circuit's probe; `step.attempt` calls made so far (a
        deferral made none; a failed probe made one)."""
        called = step.outcome is not Outcome.DEFERRED
        meta = RetryHeaders(
            destination=job.name,
            attempt=step.attempt,
            first_attempt_at_ms=job.first_attempt_ms,
            not_before_ms=0,
            last_status=step.result.label if called else job.last_status or "circuit_open",
            last_error=step.reason,
        )
        topic = wait_topic(self.topics.prefix, job.name)
        await (await self._send(topic, job.user_key, job.raw, meta.encode()))

    async def dead_letter(self, job: Job, reason: str, last_status: str, attempts: int) -> None:
        headers = dlq_headers(
            destination=job.name,
            rule=job.trigger.rule,
            reason=reason,
            last_status=last_status,
            attempts=attempts,
            first_attempt_at_ms=job.first_attempt_ms,
            dead_at_ms=now_ms(),
        )
        log.warning(
            "deliver: %s -> %s dead-lettered (%s, last %s, %d attempts)",
            job.trigger.trigger_id,
            job.name,
            reason,
            last_status,
            attempts,
        )
        await (await self._send(self.topics.triggers_dlq, job.user_key, job.raw, headers))
        metrics.dead_letters.labels(topic="triggers.dlq").inc()

    async def dead_letter_bad(self, event: EventT, error: str) -> None:
        log.warning(
            "deliver: undecodable trigger record at offset %d: %s", event.message.offset, error
        )
        headers = {"nudgeflow-reason": b"bad_record", "nudgeflow-error": error[:500].encode()}
        key = event.message.key or b""
        await (await self._send(self.topics.triggers_dlq, key, value_of(event), headers))
        metrics.dead_letters.labels(topic="triggers.dlq").inc()
