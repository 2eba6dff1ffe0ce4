"""The evaluate agent: the thin Faust shell around the pure engine.

One agent consumes three co-partitioned topics in order: raw events (fast
path), re-keyed events, and timer ticks. For each it loads the user's state,
calls `Engine.apply` or `Engine.fire_due`, publishes the actions, and writes
the state and the timer index back.

"No lost reminders": the order of hold, send, ack, RocksDB and commit is
tables/checkpoint.py's. After a crash the worst case is the same trigger (same
`trigger_id`) twice, never none.

No record stalls the worker: the engine call runs on the loop under a 50 ms alarm
(agents/alarm.py), and past it again in a thread under the handling budget
(agents/watchdog.py); one that raises or overruns is tried again, counted durably, and
quarantined to the events DLQ after `max_attempts` (agents/quarantine.py).
All or nothing: a step is fully encoded before its first record is sent
(agents/plan.py), so an event that fails leaves no audit trace.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, TypeVar

import msgspec
from aiokafka.errors import KafkaError
from faust.exceptions import ProducerSendError

from nudgeflow.agents import erase, hooks, router
from nudgeflow.agents.batch import ERASE, MERGE, TICK, BatchRunner, Routed, batches
from nudgeflow.agents.identity import Identity, Redirect, is_merge
from nudgeflow.agents.plan import Plan, plan
from nudgeflow.agents.quarantine import Failed, Guard
from nudgeflow.agents.watchdog import EngineThreads
from nudgeflow.engine.actions import Action, Conversion, Decision, Trigger
from nudgeflow.events.model import Event, encode_event
from nudgeflow.events.parse import EventError
from nudgeflow.events.segment import MERGE_EVENT
from nudgeflow.observability import conversions, metrics
from nudgeflow.observability.clock import now_ms
from nudgeflow.observability.logs import log_decision
from nudgeflow.pipeline.probes.pending import PendingTimers
from nudgeflow.tables import attempts
from nudgeflow.tables import timers as timer_index
from nudgeflow.tables import users as user_table
from nudgeflow.tables.checkpoint import Checkpoint
from nudgeflow.tables.schema import RAW_TOPIC

if TYPE_CHECKING:
    import faust
    from faust.types import Message

    from nudgeflow.engine.state import UserState
    from nudgeflow.pipeline.runtime import Runtime

log = logging.getLogger(__name__)

_KAFKA_ERRORS = (KafkaError, ProducerSendError, TimeoutError)

FIRE_BATCH = 1000  # due users handled per tick; the next tick takes the rest

T = TypeVar("T")


class Evaluator:
    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.sender = rt.sender
        self.partition: int | None = None  # of the record being handled
        self.topics = rt.topics
        self.limits = rt.settings.event_limits()
        self.pending = PendingTimers.attach(rt)  # nudgeflow_timers_pending
        self.users = rt.users_direct
        self.checkpoint = Checkpoint(rt.users_direct)  # the write ordering: tables/checkpoint.py
        threads = EngineThreads(rt.settings.handling_budget_s)
        book = attempts.AttemptBook(rt.attempts_direct)
        self.guard = Guard(book, threads, rt.settings.max_attempts)
        self.hook = hooks.parse(rt.settings.test_hook)  # tests only
        self.identity = Identity(rt, self.checkpoint, self.pending, self.store, self._to_dlq)
        self.eraser = erase.Eraser(rt, self.checkpoint, self.pending)  # agents/erase.py

    async def handle_safely(
        self, event: faust.EventT, routed: Routed | None = None, *, alone: bool = True
    ) -> None:
        """Handle one record; never lose it and never die of it.

        Kafka being unreachable is retried (same record, the engine is deterministic and the
        state is written last, so a retry can only repeat trigger ids, never lose one).
        A poison record is quarantined by `handle` itself; any other failure (a bug outside
        the engine call) sends the record to the events DLQ at once. Either way the table
        writes it made go to their changelogs (tables/direct.py), and the record is
        acknowledged once they are sent. Not `alone` (a record of a batch, agents/batch.py):
        neither flushed nor acknowledged here, the batch does both after its last record.
        """
        message = event.message
        delay = 0.5
        handled = False
        while True:
            try:
                if not handled:
                    await self.handle_routed(message, routed or self.route(message))
                    handled = True
                    if alone:
                        self.checkpoint.after_sent(event.ack)
                if alone:
                    await self.flush()
                return
            except _KAFKA_ERRORS as exc:
                log.warning(
                    "Kafka unavailable while handling %s (%s); retrying in %.1fs",
                    _source(message),
                    type(exc).__name__,
                    delay,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
            except Exception as exc:
                log.exception("evaluate failed on %s", _source(message))
                if handled:  # the changelog flush: the next record's flush tries again
                    return
                await self._dead_letter(message, exc)
                handled = True  # what it wrote locally still goes to the changelog
                if alone:
                    self.checkpoint.after_sent(event.ack)

    async def flush(self) -> None:
        """Send the table writes queued so far (Kafka errors propagate: callers retry)."""
        await self.checkpoint.flush()
        await self.guard.flush()

    async def _dead_letter(self, message: Message, exc: Exception) -> None:
        if message.topic == self.topics.ticks:
            return  # a tick carries nothing; the next one retries the firing
        error = f"{type(exc).__name__}: {exc}"[:500]
        await self._to_dlq(message, EventError(attempts.ERROR, error))

    async def _to_dlq(
        self, message: Message, error: EventError, tried: attempts.Attempts | None = None
    ) -> None:
        """The original bytes to `<prefix>.events.dlq`, the reason in headers."""
        metrics.dead_letters.labels(topic="events.dlq").inc()
        headers = router.dlq_headers(error, message.partition, message.offset)
        if tried is not None:
            headers.append(("nudgeflow-attempts", str(tried.count).encode()))
        await self.sender.send(self.topics.events_dlq, message.key, message.value, headers=headers)

    async def handle(self, message: Message) -> None:
        await self.handle_routed(message, self.route(message))

    def route(self, message: Message) -> Routed:
        """What the record is: a tick, an erase request, a merge, or an event (parsed)."""
        topic = message.topic
        if topic == self.topics.ticks:
            return TICK
        if topic == self.topics.events_by_user and erase.is_request(message):
            return ERASE
        if topic == self.topics.events_by_user and is_merge(message):
            return MERGE
        if topic == self.topics.events_by_user:  # checked again: an internal topic
            return router.rekeyed(message.key, message.value, limits=self.limits)
        metrics.events_received.labels(source="kafka").inc()
        return router.route(
            message.key,
            message.value,
            message.partition,
            self.rt.partitions,
            now_ms=now_ms(),
            limits=self.limits,
        )

    async def handle_routed(self, message: Message, routed: Routed) -> None:
        self.partition = message.partition  # the user's: see pipeline/producer.py
        if routed is TICK:
            await self.fire_timers(message)
        elif routed is ERASE:
            await self.eraser.apply(message)  # in the user's order, with its events
        elif routed is MERGE:
            await self.identity.receive(message)  # agents/identity.py
        elif isinstance(routed, router.Apply):
            await self.apply_event(routed.event, routed.user_key, message)
        elif isinstance(routed, router.Reroute):
            await self.sender.send(
                self.topics.events_by_user, routed.user_key, encode_event(routed.event)
            )
        elif isinstance(routed, router.Reject):
            await self._reject(message, routed.error)

    async def _reject(self, message: Message, error: EventError) -> None:
        metrics.events_rejected.labels(source="kafka", reason=error.reason).inc()
        log.info("event rejected to DLQ: %s (%s)", error.reason, error.field)
        await self._to_dlq(message, error)

    async def apply_event(self, event: Event, user_key: bytes, message: Message) -> None:
        """Apply one event: attempts until one succeeds, or quarantine after the last."""
        if event.type == MERGE_EVENT:  # a request to merge this user into another
            await self.identity.request(event, user_key, message)
            return
        started = time.perf_counter()
        key = attempts.record_key(message.topic, message.partition, message.offset)
        while True:
            make = self._calls(user_key, partial(self._apply, event, now_ms()))
            try:
                planned = await self.guard.attempt(key, make, _source(message))
                break
            except Failed as failed:
                if failed.final:
                    await self._quarantine(message, key, failed.attempts)
                    return
        if planned is None:
            metrics.events_duplicate.inc()
            return
        if isinstance(planned, Redirect):  # a merged-away id: on to the one it went to
            await self.identity.redirect(event, planned.pointer, message)
            return
        metrics.events_applied.inc()
        await self.publish(user_key, planned.records, started)
        self.store(user_key, planned)

    def _calls(
        self, user_key: bytes, job: Callable[[UserState | None], T], *first: UserState | None
    ) -> Callable[[], Callable[[], T]]:
        """Builds `job(state)` for the guard: with the state in `first` if given, then with
        the state loaded again (a stopped call may have changed the one it had)."""
        given = list(first)

        def make() -> Callable[[], T]:
            state = given.pop() if given else user_table.load(self.users, user_key)
            return partial(job, state)

        return make

    def _apply(self, event: Event, now: int, state: UserState | None) -> Plan | Redirect | None:
        """The step and everything it will send and write, encoded (the guard runs it
        inline under the alarm, or in an engine thread)."""
        if state is not None and state.alias_of is not None:
            return Redirect(state)
        live = self.rt.live  # one read: the engine and its version agree (live rules)
        step = live.engine.apply(state, event, now)
        if self.hook is not None:  # tests: fail or run long with the step's decisions in hand
            self.hook(event.type)
        return None if step.duplicate else plan(step.state, step.actions, version=live.version)

    async def _quarantine(self, message: Message, key: bytes, tried: attempts.Attempts) -> None:
        log.error(
            "%s quarantined to the events DLQ after %d attempts", _source(message), tried.count
        )
        metrics.quarantined.labels(kind="record").inc()
        await self._to_dlq(message, EventError(tried.reason, tried.error), tried)
        self.guard.forget(key)

    async def fire_timers(self, message: Message) -> None:
        """Fire the partition's due users, each its own attempt: a poison user is skipped
        (the next tick tries it again) and quarantined after its last attempt."""
        partition = message.partition
        now = now_ms()
        users = self.users
        floors = self.rt.timer_floors
        for deadline, user_key in timer_index.due(users, partition, now, FIRE_BATCH, floors):
            if not timer_index.present(users, deadline, user_key):
                continue  # removed already; its tombstone is not acked yet
            state = user_table.load(users, user_key)
            if state is None or state.indexed != deadline:
                # Left over from a write that a crash cut short.
                timer_index.remove(users, user_key, deadline)
                self.pending.moved(deadline, None)
                continue
            key = attempts.timer_key(deadline, user_key)
            source = f"timer {deadline} of {user_key!r}"
            make = self._calls(user_key, partial(self._fire, now), state)
            try:
                planned = await self.guard.attempt(key, make, source)
            except Failed as failed:
                if failed.final:
                    await self._quarantine_timer(partition, user_key, deadline, failed.attempts)
                continue
            if planned.records:
                metrics.timer_lateness.observe(max(0.0, (now - deadline) / 1000))
            await self.publish(user_key, planned.records, None)
            self.store(user_key, planned)
        self.rt.tick_book.done(partition)

    def _fire(self, now: int, state: UserState | None) -> Plan:
        if state is None:
            raise LookupError("the due user's state is gone")
        live = self.rt.live
        step = live.engine.fire_due(state, now)
        return plan(step.state, step.actions, consumed=True, version=live.version)

    async def _quarantine_timer(
        self, partition: int, user_key: bytes, deadline: int, tried: attempts.Attempts
    ) -> None:
        """Drop the user's due index entry and say so on the events DLQ. The state keeps
        its rules (stored as it was, minus the entry): the user's next event files it
        again. Reloaded: the failed attempt may still be changing the one it had."""
        log.error("timer %d of %r quarantined after %d attempts", deadline, user_key, tried.count)
        metrics.quarantined.labels(kind="timer").inc()
        metrics.dead_letters.labels(topic="events.dlq").inc()
        timer_index.remove(self.users, user_key, deadline)
        self.pending.moved(deadline, None)
        state = user_table.load(self.users, user_key)
        if state is not None:
            state.indexed = None
            user_table.save(self.users, user_key, state)
        user = user_key.decode(errors="replace")
        value = msgspec.json.encode({"user_id": user, "timer_deadline": deadline})
        headers = router.dlq_headers(EventError(tried.reason, tried.error), partition, -1)
        headers.append(("nudgeflow-attempts", str(tried.count).encode()))
        await self.sender.send(self.topics.events_dlq, user_key, value, headers=headers)
        self.guard.forget(attempts.timer_key(deadline, user_key))

    def store(self, user_key: bytes, planned: Plan) -> None:
        """Write the state and keep the (lazy) timer index right: see tables/timers.py.

        Order: new entry, then the state naming it, then the old entry's removal.
        """
        users = self.users
        if not planned.refile:
            user_table.put(users, user_key, planned.state)
            return
        have, want = planned.indexed_before, planned.indexed
        timer_index.add(users, user_key, want)
        if want is not None:
            self.rt.timer_floors.lower(self.partition, want)
        user_table.put(users, user_key, planned.state)
        if have != want:
            timer_index.remove(users, user_key, have)
        self.pending.moved(have, want)

    async def publish(
        self, user_key: bytes, records: list[tuple[Action, bytes]], started: float | None
    ) -> None:
        """Send the step's records in order; each trigger holds the writes after it."""
        for action, value in records:
            if isinstance(action, Trigger):
                await self._send_trigger(user_key, value, started)
                metrics.triggers_emitted.labels(rule=action.rule, variant=action.variant).inc()
                if _in_experiment(self.rt, action.rule):  # every variant, control included
                    metrics.experiment_exposures.labels(
                        rule=action.rule, variant=action.variant
                    ).inc()
            elif isinstance(action, Decision):
                metrics.decisions.labels(
                    rule=action.rule, outcome=action.outcome, reason=action.reason or ""
                ).inc()
                metrics.count_journey(action)  # the per-step funnel (rule, step)
                log_decision(action)
                if value:  # b"": counted, not audited (agents/plan.py, `unaudited`)
                    await self.sender.send(self.topics.decisions, user_key, value, self.partition)
            elif isinstance(action, Conversion):
                conversions.count_conversion(action)  # by kind; with revenue per rule/step
                metrics.count_journey(action)
                await self.sender.send(self.topics.conversions, user_key, value, self.partition)

    async def _send_trigger(self, user_key: bytes, record: bytes, started: float | None) -> None:
        """Send now; the user's later writes wait for the ack (tables/write_queue.py)."""
        ack = await self.sender.send(self.topics.triggers, user_key, record, self.partition)
        self.checkpoint.hold_until(ack)
        if started is not None:
            ack.add_done_callback(
                lambda _: metrics.event_to_trigger.observe(time.perf_counter() - started)
            )


def _source(message: Message) -> str:
    return f"{message.topic}[{message.partition}]@{message.offset}"


def _in_experiment(rt: Runtime, rule_name: str) -> bool:
    rule = rt.engine.rules.get(rule_name)
    return rule is not None and rule.experiment is not None


def register(rt: Runtime) -> Evaluator:
    """Define the evaluate agent on `rt.app`; it consumes events, re-keyed events and ticks."""
    t = rt.topics
    source = rt.app.topic(
        t.events, t.events_by_user, t.ticks, partitions=rt.partitions, **RAW_TOPIC
    )
    evaluator = Evaluator(rt)

    runner = BatchRunner(evaluator)

    async def evaluate(stream: faust.StreamT) -> None:
        # Acks are manual: a record is acknowledged once its writes are sent.
        manual: faust.Stream = stream.noack()  # type: ignore[attr-defined]
        async for events in batches(manual, rt.app):  # what is waiting, at most BATCH_MAX
            await runner.handle(events)

    rt.app.agent(source, name="evaluate")(evaluate)
    return evaluator
