"""The deliver agent: trigger records -> signed webhooks, never lost, never blocking.

* `<prefix>.triggers` is consumed by one agent instance; each record is handed
  to its own task at once (agents/flights.py, bounded by `max_in_flight`), so a slow
  destination never holds up records for healthy ones. Acks are manual: a record is
  acked only when every one of its destinations is delivered, has its retry or
  parked record acknowledged by Kafka, or is dead-lettered; Faust commits only the
  contiguous acked prefix, so a kill -9 re-reads whatever was unfinished.
* Each call needs a pass from its destination's gate (delivery/gate.py: breaker,
  concurrency, rate). While the circuit is open, deliveries are parked on
  `<prefix>.triggers.wait.<destination>` without a call and without spending an
  attempt; that topic's agent waits for the gate (the half-open probe, then the ramp)
  before it takes the next one, so after a recovery they go out in order, at the
  destination's rate, within seconds. A failed probe's delivery waits again (its call
  counts; it dead-letters the delivery only past both its attempts and the schedule's
  span); waiting deliveries older than the retry horizon are dead-lettered as `expired`.
* Retryable failures become records on `<prefix>.triggers.retry.N` (tier by
  delay, attempt metadata in headers). One consumer per tier waits for its
  head record's `not_before` and hands it to a task the same way. A retry that comes
  due while the circuit is open is parked like a new delivery.
* The `delivered` table (`trigger_id|destination` -> state) makes a trigger
  that upstream wrote twice reach a destination once; its marks expire after the
  retry horizon (tables/delivered.py). Writes happen in tasks spawned inside the
  stream iteration: the task inherits Faust's current-event context, so the
  changelog goes to the source partition.
* Limits are cluster-wide: on each assignment every gate takes this worker's share
  of its destination's `rate_limit` and `concurrency` (delivery/share.py). On each
  revocation and on SIGTERM the in-flight records are handed back or finished and
  their marks flushed before the partitions move (agents/flights.py).
* Erasure: a forget record on the triggers topic (after every trigger of that user)
  tombstones the user's timeline and files a forgotten marker; retries and parked
  deliveries of the user first attempted before it are dropped (tables/erasure.py).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterator
from typing import TYPE_CHECKING, Any, cast

import msgspec
from faust import current_event
from mode import Service

from nudgeflow.agents.flights import Flight, Flights
from nudgeflow.agents.outbox import Job, Outbox, headers_of, value_of
from nudgeflow.delivery.dispatch import Abandoned, Dispatcher, Step, log_delivery_failure
from nudgeflow.delivery.gate import Gate, Pass
from nudgeflow.delivery.records import H_DESTINATION, REPLAY_HEADER, RetryHeaders, wait_topic
from nudgeflow.delivery.retry import Outcome
from nudgeflow.delivery.sender import Sender
from nudgeflow.delivery.share import Share
from nudgeflow.engine.actions import decode_trigger
from nudgeflow.observability import metrics
from nudgeflow.observability.clock import now_ms
from nudgeflow.observability.metrics import Sample
from nudgeflow.tables import delivered as delivered_table
from nudgeflow.tables import erasure
from nudgeflow.tables.delivered import DEAD, DELIVERED, RETRYING, Sweeper
from nudgeflow.tables.schema import RAW_TOPIC

if TYPE_CHECKING:
    from faust.types import TP, EventT, StreamT

    from nudgeflow.pipeline.runtime import Runtime

log = logging.getLogger(__name__)

MAX_IN_FLIGHT = 1000
# Expired dedupe marks: each partition is swept at most every SWEEP_EVERY_S, up to
# SWEEP_LIMIT marks at a time (tables/delivered.py): far more than a partition settles.
SWEEP_EVERY_S = 0.5
SWEEP_LIMIT = 500


class Deliverer:
    """Owns the in-flight deliveries of one worker; `register` wires it to the topics."""

    def __init__(
        self, rt: Runtime, *, sender: Sender | None = None, max_in_flight: int = MAX_IN_FLIGHT
    ) -> None:
        self.app = rt.app
        self.settings = rt.config.delivery
        self.prefix = rt.topics.prefix
        self.dispatcher = Dispatcher(rt.config.destinations, self.settings, sender or Sender())
        self.outbox = Outbox(rt)
        self.table = rt.delivered
        self.flights = Flights(max_in_flight)
        self.sweeper = Sweeper(SWEEP_EVERY_S)
        self.taken: dict[TP, int] = {}  # wait-topic partition -> next offset to take
        self._inflight: set[bytes] = set()
        timeouts = [d.timeout for d in rt.config.destinations.values()]
        self.hand_back_s = max(timeouts, default=10.0) + 5.0  # a call in flight ends by then

    # -- handlers (each runs in its record's task) ------------------------------------

    async def on_trigger(self, event: EventT, flight: Flight) -> None:
        if erasure.FORGET_HEADER in headers_of(event):
            await self.on_forget(event, flight)
            return
        try:
            trigger = decode_trigger(value_of(event))
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            if flight.commit():
                await self.outbox.dead_letter_bad(event, str(exc))
            return
        if not trigger.send:
            return  # a control-group exposure: recorded upstream, never delivered
        headers = headers_of(event)
        replay = REPLAY_HEADER in headers
        only = headers.get(H_DESTINATION)
        names = [only.decode()] if replay and only else list(dict.fromkeys(trigger.destinations))
        user_key = event.message.key or trigger.user_id.encode()
        raw, now = value_of(event), now_ms()
        jobs = [Job(trigger, raw, user_key, n, 1, now, "trigger", replay) for n in names]
        await asyncio.gather(*(self.deliver(job, flight) for job in jobs))

    async def on_forget(self, event: EventT, flight: Flight) -> None:
        """An erased user: the timeline's tombstone, and retries dropped from now on."""
        user_key = event.message.key
        if not user_key:
            return
        if not flight.commit():
            raise Abandoned("forget")
        ttl_ms = int(self.settings.mark_ttl_s * 1000)
        erasure.forget(self.table, user_key, now_ms(), ttl_ms)
        await self.outbox.forget(user_key)

    def _forgotten(self, job: Job) -> bool:
        """The user was erased after this delivery's first attempt (tables/erasure.py)."""
        since = erasure.forgotten_since(self.table, job.user_key)
        return since is not None and job.first_attempt_ms <= since

    async def on_retry(self, event: EventT, flight: Flight) -> None:
        await self.deliver(Job.from_retry(event, "retry"), flight)

    async def on_waiting(self, event: EventT, flight: Flight, admitted: Pass) -> None:
        """A parked delivery, with the pass its agent waited for."""
        try:
            job = Job.from_retry(event, "wait")
            if now_ms() - job.first_attempt_ms > self.settings.horizon_s * 1000:
                admitted.done(None)
                await self._expired(job, flight)
                return
            await self.deliver(job, flight, admitted)
        finally:
            admitted.done(None)  # no-op when the call reported its outcome

    # -- one delivery -----------------------------------------------------------------

    def _settled(self, key: bytes, job: Job) -> bool:
        """Nothing to do: delivered already, dead (a retry of it), or an upstream
        duplicate of a pair that has any mark (a replayed dead letter excepted)."""
        state = self.table.get(key)
        if state == DELIVERED or (job.source != "trigger" and state == DEAD):
            return True
        return job.source == "trigger" and state is not None and not (job.replay and state == DEAD)

    async def deliver(self, job: Job, flight: Flight, admitted: Pass | None = None) -> None:
        key = delivered_table.key(job.trigger.trigger_id, job.name)
        if self._settled(key, job) or key in self._inflight:
            return  # (in flight: the same pair is being attempted right now; that settles it)
        if job.source != "trigger" and self._forgotten(job):
            metrics.deliveries.labels(destination=job.name, outcome="forgotten").inc()
            return
        self._inflight.add(key)
        try:
            step = await self.dispatcher.attempt(
                job.trigger,
                job.name,
                job.attempt,
                admitted=admitted,
                may_call=flight.commit,
                age_s=(now_ms() - job.first_attempt_ms) / 1000,
            )
            if step.outcome is Outcome.DEFERRED:
                if not flight.commit():
                    raise Abandoned(job.trigger.trigger_id)
                await self.outbox.park(job, step)
                self._mark(key, RETRYING)
            else:
                await self._settle(job, key, step)
        finally:
            self._inflight.discard(key)
        self._sweep()

    async def _settle(self, job: Job, key: bytes, step: Step) -> None:
        """After a call: audit it, then mark delivered, schedule a retry, or dead-letter."""
        await self.outbox.audit(job, step, timeline=not self._forgotten(job))
        if step.outcome is Outcome.DELIVERED:
            self._mark(key, DELIVERED)
            return
        log_delivery_failure(job.trigger, job.name, step)
        if step.outcome is Outcome.RETRY and step.probe:  # the circuit is open again
            await self.outbox.park(job, step)
            self._mark(key, RETRYING)
        elif step.outcome is Outcome.RETRY:
            await self.outbox.retry(job, step)
            self._mark(key, RETRYING)
        else:
            await self.outbox.dead_letter(job, step.reason, step.result.label, step.attempt)
            self._mark(key, DEAD)

    async def _expired(self, job: Job, flight: Flight) -> None:
        """Parked past the retry horizon (its endpoint down that long): dead letter."""
        if not flight.commit():
            raise Abandoned(job.trigger.trigger_id)
        key = delivered_table.key(job.trigger.trigger_id, job.name)
        if self._settled(key, job):
            return
        calls = job.attempt - 1
        await self.outbox.dead_letter(job, "expired", job.last_status or "circuit_open", calls)
        metrics.deliveries.labels(destination=job.name, outcome="dead").inc()
        self._mark(key, DEAD)

    def _mark(self, key: bytes, state: bytes) -> None:
        ttl_ms = int(self.settings.mark_ttl_s * 1000)
        delivered_table.mark(self.table, key, state, now_ms(), ttl_ms)

    def _sweep(self) -> None:
        event = current_event()
        if event is not None:
            partition = event.message.partition
            self.sweeper.sweep(self.table, partition, now_ms(), SWEEP_LIMIT)

    # -- rebalances, shutdown, metrics ------------------------------------------------

    async def hand_back(self, *, stopping: bool = False) -> None:
        """Before partitions move: finish or hand back what is in flight, flush marks."""
        back, done = await self.flights.hand_back(self.hand_back_s, stopping=stopping)
        self.sweeper.forget()
        self.taken.clear()
        await self.app.producer.flush()
        if back or done or stopping:
            log.info("deliver: handed back %d records, finished %d in flight", back, done)

    def reshare(self, owned: list[int], total: int) -> None:
        share = Share.of(owned, total)
        self.dispatcher.reshare(share)
        metrics.delivery_share.set(share.fraction)
        limits = ", ".join(
            f"{name}: {gate.limit} concurrent"
            + ("" if gate.rate_per_s is None else f", {gate.rate_per_s:g}/s")
            for name, gate in sorted(self.dispatcher.gates.items())
        )
        log.info(
            "deliver: this worker owns %d of %d triggers partitions (%s)",
            len(share.owned),
            total,
            limits or "no destinations",
        )

    def waiting(self) -> Iterator[Sample]:
        """(destination,) -> parked deliveries not yet taken, in partitions owned here."""
        consumer: Any = self.app.consumer
        try:
            assigned = consumer.assignment()
        except Exception:  # not started
            return
        committed = getattr(consumer, "_committed_offset", {})
        for name in sorted(self.dispatcher.gates):
            topic, total = wait_topic(self.prefix, name), 0
            for tp in assigned:
                if tp.topic != topic:
                    continue
                try:
                    highwater = consumer.highwater(tp)
                except Exception:
                    continue
                position = self.taken.get(tp) or committed.get(tp) or 0
                total += max(0, (highwater or 0) - position)
            yield (name,), float(total)


def _closing(sender: Sender) -> type[Service]:
    """A service whose stop closes the HTTP sessions (no 'Unclosed client session')."""

    class SenderCloser(Service):
        async def on_stop(self) -> None:
            await sender.close()

    return SenderCloser


Agent = Callable[["StreamT"], Awaitable[None]]


def _retry_agent(d: Deliverer) -> Agent:
    async def retry(stream: StreamT) -> None:
        acked: StreamT = cast(Any, stream).noack()
        async for event in acked.events():
            flight = d.flights.flight()
            due = RetryHeaders.decode(headers_of(event)).not_before_ms
            wait_s = (due - now_ms()) / 1000
            if wait_s > 0:  # the tier is in due order: only the head ever waits
                await asyncio.sleep(wait_s)
            await d.flights.spawn(acked, event, d.on_retry, flight)

    return retry


def _wait_agent(d: Deliverer, gate: Gate) -> Agent:
    """Takes the next parked delivery only once the gate lets a call out."""

    async def wait(stream: StreamT) -> None:
        acked: StreamT = cast(Any, stream).noack()
        async for event in acked.events():
            flight = d.flights.flight()
            admitted = await gate.enter(park=False)
            assert admitted is not None  # park=False waits instead
            flight.cleanups.append(lambda p=admitted: p.done(None))  # type: ignore[misc]
            d.taken[event.message.tp] = event.message.offset + 1

            async def handle(e: EventT, f: Flight, p: Pass = admitted) -> None:
                await d.on_waiting(e, f, p)

            await d.flights.spawn(acked, event, handle, flight)

    return wait


def _follow_rebalances(rt: Runtime, d: Deliverer) -> None:
    async def on_revoked(sender: Any, *args: Any, **kwargs: Any) -> None:
        await d.hand_back()

    async def on_assigned(sender: Any, *args: Any, **kwargs: Any) -> None:
        d.reshare(rt.owned_partitions(rt.topics.triggers), rt.partitions)

    signals: Any = rt.app  # mode's Signal typing rejects receivers taking *args
    signals.on_partitions_revoked.connect(on_revoked, weak=False)
    signals.on_partitions_assigned.connect(on_assigned, weak=False)


def register(
    rt: Runtime, *, sender: Sender | None = None, max_in_flight: int = MAX_IN_FLIGHT
) -> Deliverer:
    """Define the deliver agents on `rt.app`: triggers, one per retry tier, one per
    destination's wait topic; follow rebalances; finish in-flight webhooks on SIGTERM."""
    d = Deliverer(rt, sender=sender, max_in_flight=max_in_flight)
    app, topics, partitions = rt.app, rt.topics, rt.partitions

    async def deliver(stream: StreamT) -> None:
        acked: StreamT = cast(Any, stream).noack()
        async for event in acked.events():
            await d.flights.spawn(acked, event, d.on_trigger, d.flights.flight())

    source = app.topic(topics.triggers, partitions=partitions, **RAW_TOPIC)
    app.agent(source, name="deliver")(deliver)
    for tier in range(len(d.settings.retry_schedule)):
        topic = app.topic(topics.triggers_retry(tier), partitions=partitions, **RAW_TOPIC)
        app.agent(topic, name=f"deliver-retry-{tier}")(_retry_agent(d))
    for name, gate in d.dispatcher.gates.items():
        topic = app.topic(wait_topic(topics.prefix, name), partitions=partitions, **RAW_TOPIC)
        app.agent(topic, name=f"deliver-wait-{name}")(_wait_agent(d, gate))
    app.service(_closing(d.dispatcher.sender))
    _follow_rebalances(rt, d)
    rt.before_stop.append(lambda: d.hand_back(stopping=True))
    metrics.circuit_failure_ratio.bind(d.dispatcher.failure_ratios)
    metrics.delivery_waiting.bind(d.waiting)
    return d
