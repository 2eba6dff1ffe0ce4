"""The evaluate agent: the thin Faust shell around the pure engine.

One agent consumes three co-partitioned topics in order: raw events (fast
path), re-keyed events, and timer ticks. For each it loads the user's state,
calls `Engine.apply` or `Engine.fire_due`, publishes the actions, and writes
the state and the timer index back.

"No lost reminders": the order of hold, send, ack, RocksDB and commit is
tables/checkpoint.py's. After a crash the worst case is the same trigger (same
`trigger_id`) twice, never none.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from aiokafka.errors import KafkaError
from faust.exceptions import ProducerSendError

from nudgeflow.agents import hooks, router
from nudgeflow.engine.actions import Conversion, Decision, Trigger, encode_action
from nudgeflow.events.model import Event, decode_event, encode_event
from nudgeflow.events.parse import EventError
from nudgeflow.observability import metrics
from nudgeflow.observability.clock import now_ms
from nudgeflow.observability.logs import log_decision
from nudgeflow.pipeline.probes.pending import PendingTimers
from nudgeflow.tables import timeline
from nudgeflow.tables import timers as timer_index
from nudgeflow.tables import users as user_table
from nudgeflow.tables.checkpoint import Checkpoint
from nudgeflow.tables.schema import RAW_TOPIC

if TYPE_CHECKING:
    import faust
    from faust.types import Message

    from nudgeflow.engine.actions import Action
    from nudgeflow.engine.state import UserState
    from nudgeflow.pipeline.runtime import Runtime

log = logging.getLogger(__name__)

_KAFKA_ERRORS = (KafkaError, ProducerSendError, TimeoutError)

FIRE_BATCH = 1000  # due users handled per tick; the next tick takes the rest


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
        self.hook = hooks.parse(rt.settings.test_hook)  # tests only

    async def handle_safely(self, event: faust.EventT) -> None:
        """Handle one record; never lose it and never die of it.

        Kafka being unreachable is retried (same record, the engine is deterministic and the
        state is written last, so a retry can only repeat trigger ids, never lose one);
        any other failure is a bug or a poison record: it goes to the events DLQ with the
        reason, and the partition moves on. Either way the table writes it made go to their
        changelogs (tables/direct.py), and the record is acknowledged once they are sent.
        """
        message = event.message
        delay = 0.5
        handled = False
        while True:
            try:
                if not handled:
                    await self.handle(message)
                    handled = True
                    self.checkpoint.after_sent(event.ack)
                await self.checkpoint.flush()
                return
            except _KAFKA_ERRORS as exc:
                log.warning(
                    "Kafka unavailable while handling %s[%d]@%d (%s); retrying in %.1fs",
                    message.topic,
                    message.partition,
                    message.offset,
                    type(exc).__name__,
                    delay,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
            except Exception as exc:
                log.exception(
                    "evaluate failed on %s[%d]@%d",
                    message.topic,
                    message.partition,
                    message.offset,
                )
                if handled:  # the changelog flush: the next record's flush tries again
                    return
                await self._dead_letter(message, exc)
                handled = True  # what it wrote locally still goes to the changelog
                self.checkpoint.after_sent(event.ack)

    async def _dead_letter(self, message: Message, exc: Exception) -> None:
        if message.topic == self.topics.ticks:
            return  # a tick carries nothing; the next one retries the firing
        await self._to_dlq(
            message, EventError("processing_error", f"{type(exc).__name__}: {exc}"[:500])
        )

    async def _to_dlq(self, message: Message, error: EventError) -> None:
        """The original bytes to `<prefix>.events.dlq`, the reason in headers."""
        metrics.dead_letters.labels(topic="events.dlq").inc()
        await self.sender.send(
            self.topics.events_dlq,
            message.key,
            message.value,
            headers=router.dlq_headers(error, message.partition, message.offset),
        )

    async def handle(self, message: Message) -> None:
        topic = message.topic
        self.partition = message.partition  # the user's: see pipeline/producer.py
        if topic == self.topics.ticks:
            await self.fire_timers(message.partition)
        elif topic == self.topics.events_by_user:
            event = decode_event(message.value or b"")
            await self.apply_event(event, message.key or event.user_id.encode())
        else:
            await self.ingest(message)

    async def ingest(self, message: Message) -> None:
        metrics.events_received.labels(source="kafka").inc()
        routed = router.route(
            message.key,
            message.value,
            message.partition,
            self.rt.partitions,
            now_ms=now_ms(),
            limits=self.limits,
        )
        if isinstance(routed, router.Apply):
            await self.apply_event(routed.event, routed.user_key)
        elif isinstance(routed, router.Reroute):
            await self.sender.send(
                self.topics.events_by_user, routed.user_key, encode_event(routed.event)
            )
        else:
            error = routed.error
            metrics.events_rejected.labels(source="kafka", reason=error.reason).inc()
            log.info("event rejected to DLQ: %s (%s)", error.reason, error.field)
            await self._to_dlq(message, error)

    async def apply_event(self, event: Event, user_key: bytes) -> None:
        started = time.perf_counter()
        now = now_ms()
        state = user_table.load(self.users, user_key)
        if self.hook is not None:
            self.hook(event.type)
        step = self.rt.engine.apply(state, event, now)
        if step.duplicate:
            metrics.events_duplicate.inc()
            return
        metrics.events_applied.inc()
        await self.publish(step.state, user_key, step.actions, started)
        self.store(user_key, step.state)

    async def fire_timers(self, partition: int) -> None:
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
            step = self.rt.engine.fire_due(state, now)
            if step.actions:
                metrics.timer_lateness.observe(max(0.0, (now - deadline) / 1000))
            await self.publish(step.state, user_key, step.actions, None)
            self.store(user_key, step.state, consumed=True)
        self.rt.tick_book.done(partition)

    def store(self, user_key: bytes, state: UserState, *, consumed: bool = False) -> None:
        """Write the state and keep the (lazy) timer index right: see tables/timers.py.

        `consumed`: the user's entry just came due and must be re-filed or dropped.
        Order: new entry, then the state naming it, then the old entry's removal.
        """
        users = self.users
        have = state.indexed
        want = state.next_deadline()
        keep = have is not None and not consumed and want is not None and want >= have
        if keep or (have is None and want is None):
            user_table.save(users, user_key, state)
            return
        timer_index.add(users, user_key, want)
        if want is not None:
            self.rt.timer_floors.lower(self.partition, want)
        state.indexed = want
        user_table.save(users, user_key, state)
        if have != want:
            timer_index.remove(users, user_key, have)
        self.pending.moved(have, want)

    async def publish(
        self,
        state: UserState,
        user_key: bytes,
        actions: list[Action],
        started: float | None,
    ) -> None:
        decisions: list[Decision] = []  # for the user's audit timeline
        late: dict[str, float] = {}  # trigger id -> lateness (s), shown on its `fired` decision
        for action in actions:
            value = b"" if _unaudited(action) else encode_action(action)
            if isinstance(action, Trigger):
                if action.late:
                    late[action.trigger_id] = action.lateness_s
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
                log_decision(action)
                if action.outcome == "rearmed":
                    continue  # counted, not audited: see _unaudited()
                if action.outcome == "fired" and action.trigger_id in late:
                    lateness = late[action.trigger_id]
                    action.detail = {**action.detail, "late": True, "lateness_s": lateness}
                    value = encode_action(action)
                decisions.append(action)
                await self.sender.send(self.topics.decisions, user_key, value, self.partition)
            elif isinstance(action, Conversion):
                metrics.experiment_conversions.labels(
                    rule=action.rule, variant=action.variant, kind=action.kind
                ).inc()
                await self.sender.send(self.topics.conversions, user_key, value, self.partition)
        timeline.remember(state, decisions)

    async def _send_trigger(self, user_key: bytes, record: bytes, started: float | None) -> None:
        """Send now; the user's later writes wait for the ack (tables/write_queue.py)."""
        ack = await self.sender.send(self.topics.triggers, user_key, record, self.partition)
        self.checkpoint.hold_until(ack)
        if started is not None:
            ack.add_done_callback(
                lambda _: metrics.event_to_trigger.observe(time.perf_counter() - started)
            )


def _unaudited(action: Action) -> bool:
    """`rearmed` (an activity event pushed an inactivity deadline) happens on nearly every
    event; it is counted in metrics, and the deadline is in the user's state, but it is not
    written to the audit topic or timeline: it would triple the records per event and say
    nothing that the next armed/fired/cancelled/condition_false record does not."""
    return isinstance(action, Decision) and action.outcome == "rearmed"


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

    async def evaluate(stream: faust.StreamT) -> None:
        # Acks are manual: a record is acknowledged once its writes are sent.
        manual: faust.Stream = stream.noack()  # type: ignore[attr-defined]
        async for event in manual.events():
            await evaluator.handle_safely(event)

    rt.app.agent(source, name="evaluate")(evaluate)
    return evaluator
