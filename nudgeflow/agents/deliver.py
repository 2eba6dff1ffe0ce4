"""The deliver agent: trigger records -> signed webhooks, never lost, never blocking.

* `<prefix>.triggers` is consumed by one agent instance; each record is handed
  to its own task at once (bounded by `max_in_flight`), so a slow destination
  never holds up records for healthy ones. Acks are manual: a record is acked
  only when every one of its destinations is delivered, has its retry record
  acknowledged by Kafka, or is dead-lettered; Faust commits only the
  contiguous acked prefix, so a kill -9 re-reads whatever was unfinished.
* Retryable failures become records on `<prefix>.triggers.retry.N` (tier by
  delay, attempt metadata in headers). One consumer per tier waits for its
  head record's `not_before` and hands it to a task the same way.
* The `delivered` table (`trigger_id|destination` -> state) makes a trigger
  that upstream wrote twice reach a destination once. Writes happen in tasks
  spawned inside the stream iteration: the task inherits Faust's
  current-event context, so the changelog goes to the source partition.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, cast

import msgspec
from mode import Service

from nudgeflow.delivery.dispatch import Dispatcher, Step, log_delivery_failure
from nudgeflow.delivery.records import (
    H_DESTINATION,
    REPLAY_HEADER,
    DeliveryAttempt,
    RetryHeaders,
    dlq_headers,
    encode_attempt,
)
from nudgeflow.delivery.retry import Outcome
from nudgeflow.delivery.sender import Sender
from nudgeflow.engine.actions import Trigger, decode_trigger
from nudgeflow.engine.timefmt import iso_utc
from nudgeflow.observability import metrics
from nudgeflow.observability.clock import now_ms
from nudgeflow.tables import delivered as delivered_table
from nudgeflow.tables import timeline as timeline_table
from nudgeflow.tables.delivered import DEAD, DELIVERED, RETRYING
from nudgeflow.tables.schema import RAW_TOPIC

if TYPE_CHECKING:
    from faust.types import EventT, StreamT

    from nudgeflow.pipeline.runtime import Runtime

log = logging.getLogger(__name__)

MAX_IN_FLIGHT = 1000
_SEND_TRIES = 5


def _value(event: EventT) -> bytes:
    return event.message.value or b""


def _headers(event: EventT) -> Mapping[str, bytes]:
    raw: Any = event.headers or {}
    return raw if isinstance(raw, Mapping) else dict(raw)


class Deliverer:
    """Owns the in-flight deliveries of one worker; `register` wires it to the topics."""

    def __init__(
        self, rt: Runtime, *, sender: Sender | None = None, max_in_flight: int = MAX_IN_FLIGHT
    ) -> None:
        self.app = rt.app
        self.topics = rt.topics
        self.settings = rt.config.delivery
        self.records = rt.sender
        self.dispatcher = Dispatcher(rt.config.destinations, self.settings, sender or Sender())
        self.table = rt.delivered
        self.timeline = rt.timeline_direct  # per-user audit (tables/timeline.py)
        self.max_in_flight = max_in_flight
        self._slots: asyncio.Semaphore | None = None
        self._inflight: set[bytes] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    # -- the stream side ------------------------------------------------------

    async def spawn(
        self, stream: StreamT, event: EventT, handler: Callable[[EventT], Awaitable[None]]
    ) -> None:
        """Run `handler(event)` in its own task, acking the event when it is settled."""
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.max_in_flight)
        await self._slots.acquire()
        task = asyncio.create_task(self._settle(stream, event, handler))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _settle(
        self, stream: StreamT, event: EventT, handler: Callable[[EventT], Awaitable[None]]
    ) -> None:
        try:
            for attempt in range(1, _SEND_TRIES + 1):
                try:
                    await handler(event)
                except Exception:
                    log.exception(
                        "deliver: handling %s[%d]@%d failed (try %d)",
                        event.message.topic,
                        event.message.partition,
                        event.message.offset,
                        attempt,
                    )
                    await asyncio.sleep(min(2.0**attempt, 30.0))
                    continue
                await stream.ack(event)
                return
            log.error(
                "deliver: leaving %s@%d unacked; it is re-read on restart",
                event.message.topic,
                event.message.offset,
            )
        finally:
            assert self._slots is not None
            self._slots.release()

    async def drain(self) -> None:
        """Wait for every in-flight record (tests, orderly shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    # -- handlers -------------------------------------------------------------

    async def on_trigger(self, event: EventT) -> None:
        try:
            trigger = decode_trigger(_value(event))
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            await self._dead_letter_bad(event, str(exc))
            return
        if not trigger.send:
            return  # a control-group exposure: recorded upstream, never delivered
        headers = _headers(event)
        replay = REPLAY_HEADER in headers
        only = headers.get(H_DESTINATION)
        names = [only.decode()] if replay and only else list(dict.fromkeys(trigger.destinations))
        user_key = event.message.key or trigger.user_id.encode()
        now = now_ms()
        await asyncio.gather(
            *(
                self.deliver(trigger, _value(event), user_key, n, 1, now, replay=replay)
                for n in names
            )
        )

    async def on_retry(self, event: EventT) -> None:
        meta = RetryHeaders.decode(_headers(event))
        trigger = decode_trigger(_value(event))
        user_key = event.message.key or trigger.user_id.encode()
        await self.deliver(
            trigger,
            _value(event),
            user_key,
            meta.destination,
            meta.attempt + 1,
            meta.first_attempt_at_ms,
            from_retry=True,
        )

    async def deliver(
        self,
        trigger: Trigger,
        raw: bytes,
        user_key: bytes,
        name: str,
        attempt: int,
        first_attempt_ms: int,
        *,
        replay: bool = False,
        from_retry: bool = False,
    ) -> None:
        key = delivered_table.key(trigger.trigger_id, name)
        state = self.table.get(key)
        if state == DELIVERED or (from_retry and state == DEAD):
            return
        if not from_retry and state is not None and not (replay and state == DEAD):
            return  # upstream duplicate: already delivered, dead or waiting for a retry
        if key in self._inflight:
            return  # the same pair is being attempted right now; that task settles it
        self._inflight.add(key)
        try:
            step = await self.dispatcher.attempt(trigger, name, attempt)
            await self._audit(trigger, user_key, name, step)
            if step.outcome is not Outcome.DELIVERED:
                log_delivery_failure(trigger, name, step)
            if step.outcome is Outcome.DELIVERED:
                self.table[key] = DELIVERED
            elif step.outcome is Outcome.RETRY:
                await self._schedule_retry(raw, user_key, name, step, first_attempt_ms)
                self.table[key] = RETRYING
            else:
                await self._dead_letter(trigger, raw, user_key, name, step, first_attempt_ms)
                self.table[key] = DEAD
        finally:
            self._inflight.discard(key)

    # -- producing ------------------------------------------------------------

    async def _send(
        self, topic: str, key: bytes, value: bytes, headers: Mapping[str, bytes] | None
    ) -> Any:
        """Send; returns the delivery future (await it to know Kafka has it)."""
        header_list = list(headers.items()) if headers else None
        return await self.records.send(topic, key, value, None, header_list)

    async def _audit(self, trigger: Trigger, user_key: bytes, name: str, step: Step) -> None:
        record = DeliveryAttempt(
            trigger_id=trigger.trigger_id,
            rule=trigger.rule,
            destination=name,
            attempt=step.attempt,
            outcome=step.outcome.value,
            latency_s=round(step.result.latency_s, 6),
            at=iso_utc(now_ms()),
            status=step.result.status,
            error=step.result.error_class,
            reason=step.reason,
        )
        await self._send(self.topics.deliveries, user_key, encode_attempt(record), None)
        # The task runs in the trigger's event context: the write goes to its partition.
        timeline_table.record_delivery(self.timeline, user_key, record)
        await self.timeline.flush()

    async def _schedule_retry(
        self, raw: bytes, user_key: bytes, name: str, step: Step, first_attempt_ms: int
    ) -> None:
        assert step.delay_s is not None and step.tier is not None
        meta = RetryHeaders(
            destination=name,
            attempt=step.attempt,
            first_attempt_at_ms=first_attempt_ms,
            not_before_ms=now_ms() + int(step.delay_s * 1000),
            last_status=step.result.label,
            last_error=step.reason,
        )
        ack = await self._send(self.topics.triggers_retry(step.tier), user_key, raw, meta.encode())
        await ack

    async def _dead_letter(
        self,
        trigger: Trigger,
        raw: bytes,
        user_key: bytes,
        name: str,
        step: Step,
        first_attempt_ms: int,
    ) -> None:
        headers = dlq_headers(
            destination=name,
            rule=trigger.rule,
            reason=step.reason,
            last_status=step.result.label,
            attempts=step.attempt,
            first_attempt_at_ms=first_attempt_ms,
            dead_at_ms=now_ms(),
        )
        log.warning(
            "deliver: %s -> %s dead-lettered (%s, last %s, %d attempts)",
            trigger.trigger_id,
            name,
            step.reason,
            step.result.label,
            step.attempt,
        )
        ack = await self._send(self.topics.triggers_dlq, user_key, raw, headers)
        await ack
        metrics.dead_letters.labels(topic="triggers.dlq").inc()

    async def _dead_letter_bad(self, event: EventT, error: str) -> None:
        log.warning(
            "deliver: undecodable trigger record at offset %d: %s", event.message.offset, error
        )
        headers = {"nudgeflow-reason": b"bad_record", "nudgeflow-error": error[:500].encode()}
        ack = await self._send(
            self.topics.triggers_dlq, event.message.key or b"", _value(event), headers
        )
        await ack
        metrics.dead_letters.labels(topic="triggers.dlq").inc()


def _closing(sender: Sender) -> type[Service]:
    """A service whose stop closes the HTTP sessions (no 'Unclosed client session')."""

    class SenderCloser(Service):
        async def on_stop(self) -> None:
            await sender.close()

    return SenderCloser


def register(
    rt: Runtime, *, sender: Sender | None = None, max_in_flight: int = MAX_IN_FLIGHT
) -> Deliverer:
    """Define the deliver agents on `rt.app`: triggers, and one per retry tier."""
    d = Deliverer(rt, sender=sender, max_in_flight=max_in_flight)
    app, topics, partitions = rt.app, rt.topics, rt.partitions

    async def deliver(stream: StreamT) -> None:
        acked: StreamT = cast(Any, stream).noack()
        async for event in acked.events():
            await d.spawn(acked, event, d.on_trigger)

    source = app.topic(topics.triggers, partitions=partitions, **RAW_TOPIC)
    app.agent(source, name="deliver")(deliver)

    def tier_agent(tier: int) -> Callable[[StreamT], Awaitable[None]]:
        async def retry(stream: StreamT) -> None:
            acked: StreamT = cast(Any, stream).noack()
            async for event in acked.events():
                due = RetryHeaders.decode(_headers(event)).not_before_ms
                wait_s = (due - now_ms()) / 1000
                if wait_s > 0:  # the tier is in due order: only the head ever waits
                    await asyncio.sleep(wait_s)
                await d.spawn(acked, event, d.on_retry)

        return retry

    app.service(_closing(d.dispatcher.sender))
    for tier in range(len(d.settings.retry_schedule)):
        topic = app.topic(topics.triggers_retry(tier), partitions=partitions, **RAW_TOPIC)
        app.agent(topic, name=f"deliver-retry-{tier}")(tier_agent(tier))
    return d
