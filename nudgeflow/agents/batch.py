"""The batch evaluate path (issue 23.1): the records waiting for the agent, handled together.

Faust hands the evaluate agent one record per stream iteration; the agent takes, after
each, whatever else its queue already holds (at most BATCH_MAX): at low rates a batch
is one record and waits for nothing, under load it grows. A batch is cut into segments
of events at the records that are not plain events of the partition's own users (ticks,
erase requests, merges, re-routed or rejected records): those are handled on their own,
in their place, by the per-record path (`Evaluator.handle_safely`).

A segment, in order:
1. **Compute** (pure; inline under one alarm, agents/alarm.py): per user, the state
   loaded once, its events applied one after the other, each step's records encoded as
   it comes (`plan.Steps`, the same records and state bytes as one step at a time), the
   state encoded once after its last event. A user whose load, step or encoding raises,
   whose state is a merged-away alias, or one of whose records failed before (a stored
   attempt count), is handled record by record instead (`alone`): the per-record path
   counts, retries and quarantines exactly as before. A segment whose compute overruns
   the inline budget goes record by record too (each under its own alarm); straight to
   the engine threads if the overrun held the loop past the whole handling budget (one
   C operation: running it inline again would hold the loop a second time).
2. **Publish**, in the records' order: each event's records; a trigger puts its hold
   (tables/checkpoint.py step 1), so every state write queued after it waits for its
   ack. An `alone` user's records are handled by the per-record path in their place.
3. **Store** each user's final state and timer-index change, after every send above.
4. **Acknowledge** every record of the segment in order once its writes are sent
   (step 5: a marker behind the writes), and flush once per batch.

A Kafka error (or any other) while publishing leaves no state stored: every record of
the segment not done yet is handled again by the per-record path, which retries Kafka
and dead-letters what fails again (records sent twice carry the same trigger ids, which
the deliver agent drops).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from enum import Enum
from functools import partial
from typing import TYPE_CHECKING, Any, Protocol

from aiokafka.errors import KafkaError
from faust.exceptions import ProducerSendError

from nudgeflow.agents import router
from nudgeflow.agents.alarm import InlineOverrun
from nudgeflow.agents.plan import Plan, Steps
from nudgeflow.events.model import Event
from nudgeflow.events.segment import MERGE_EVENT
from nudgeflow.observability import metrics
from nudgeflow.observability.batches import batched_records, batches_taken
from nudgeflow.observability.clock import now_ms
from nudgeflow.tables import attempts, direct
from nudgeflow.tables import users as user_table

if TYPE_CHECKING:
    import faust
    from faust.types import Message

    from nudgeflow.agents.quarantine import Guard
    from nudgeflow.engine.actions import Action
    from nudgeflow.engine.core import Step
    from nudgeflow.engine.state import UserState
    from nudgeflow.pipeline.runtime import Runtime
    from nudgeflow.tables.checkpoint import Checkpoint
    from nudgeflow.tables.direct import DirectTable

log = logging.getLogger(__name__)

BATCH_MAX = 32  # records per batch: its compute stays well inside the 50 ms inline alarm

_KAFKA_ERRORS = (KafkaError, ProducerSendError, TimeoutError)  # retried, as per record


class Special(Enum):
    """A record that is not an event: handled on its own, in its place among the events."""

    TICK = "tick"
    ERASE = "erase"
    MERGE = "merge"


TICK, ERASE, MERGE = Special.TICK, Special.ERASE, Special.MERGE
Routed = router.Route | Special


# -- taking batches from the agent's stream ---------------------------------------------


def waiting(queue: Any, app: Any) -> bool:
    """Whether the stream's next record is already in its queue and will be handed out
    (not skipped for a rebalance), so taking it does not wait."""
    items = getattr(queue, "_queue", None)
    if not items:
        return False
    message = getattr(items[0], "message", None)
    return (
        message is not None
        and app.flow_control.is_active()
        and message.generation_id == app.consumer_generation_id
    )


async def batches(
    stream: faust.Stream, app: Any, size: int = BATCH_MAX
) -> AsyncIterator[list[faust.EventT]]:
    """The stream's events, each with those already waiting behind it (at most `size`)."""
    queue = stream.channel.queue  # type: ignore[attr-defined]
    events = stream.events().__aiter__()
    while True:
        try:
            batch = [await events.__anext__()]
        except StopAsyncIteration:
            return
        while len(batch) < size and waiting(queue, app):
            batch.append(await events.__anext__())
        yield batch


# -- the pure part: one segment's engine steps, grouped per user ------------------------


class Applies(Protocol):
    def apply(self, state: UserState | None, event: Event, now_ms: int) -> Step: ...


@dataclass(slots=True)
class Item:
    """One event of a segment."""

    user_key: bytes
    event: Event
    now: int
    partition: int = 0
    alone: bool = False  # its user goes record by record (failed before, a merge request)
    records: list[tuple[Action, bytes]] = field(default_factory=list)  # once computed
    duplicate: bool = False


@dataclass(slots=True)
class Run:
    """One user's events in a segment."""

    state: UserState | None = None
    steps: Steps | None = None
    alone: bool = False
    plan: Plan | None = None  # what to store, once every step succeeded (None: nothing)
    partition: int = 0
    applied: bool = False  # some event was not a duplicate: the state changed


def compute(
    items: list[Item],
    load: Callable[[Item], UserState | None],
    engine: Applies,
    version: int = 0,
    hook: Callable[[str], None] | None = None,
) -> dict[bytes, Run]:
    """Each user's steps, in the items' order; fills `item.records`. Never raises for one
    user's failure (that user's run is `alone`); an alarm's InlineOverrun goes through."""
    runs: dict[bytes, Run] = {}
    for item in items:
        run = runs.get(item.user_key)
        if run is None:
            run = runs[item.user_key] = _start(item, load)
        if item.alone:
            run.alone = True
        if run.alone or run.steps is None:
            continue
        try:
            step = engine.apply(run.state, item.event, item.now)
            if hook is not None:  # tests: as `Evaluator._apply` calls it
                hook(item.event.type)
            run.state = step.state
            item.duplicate = step.duplicate
            if not step.duplicate:
                run.applied = True
                item.records = run.steps.add(step.state, step.actions, version=version)
        except Exception:
            run.alone = True  # the per-record path tries it again, counted
    for run in runs.values():
        if run.alone or run.state is None or run.steps is None:
            continue
        if run.applied:  # all duplicates: nothing to store, as for one duplicate
            try:
                run.plan = run.steps.plan(run.state)
            except Exception:
                run.alone = True
    return runs


def _start(item: Item, load: Callable[[Item], UserState | None]) -> Run:
    run = Run(partition=item.partition)
    try:
        run.state = load(item)
    except Exception:
        run.alone = True
        return run
    if run.state is not None and run.state.alias_of is not None:
        run.alone = True  # a merged-away id: the per-record path redirects it
        return run
    run.steps = Steps(run.state.indexed if run.state is not None else None)
    return run


# -- the agent's side --------------------------------------------------------------------


@dataclass(slots=True)
class _Record:
    event: faust.EventT
    routed: Routed | None  # None: routing itself failed (the per-record path says why)
    item: Item | None = None  # set for an event of the partition's own user
    done: bool = False


class Shell(Protocol):
    """What the batch path uses of `agents.evaluate.Evaluator` (which imports this module)."""

    rt: Runtime
    users: DirectTable
    guard: Guard
    checkpoint: Checkpoint
    partition: int | None

    @property
    def hook(self) -> Callable[[str], None] | None: ...

    def route(self, message: Message) -> Routed: ...

    async def handle_safely(
        self, event: faust.EventT, routed: Routed | None = None, *, alone: bool = True
    ) -> None: ...

    async def publish(
        self, user_key: bytes, records: list[tuple[Action, bytes]], started: float | None
    ) -> None: ...

    def store(self, user_key: bytes, planned: Plan) -> None: ...

    async def flush(self) -> None: ...


class BatchRunner:
    """Handles the evaluate agent's batches with the `Evaluator`."""

    def __init__(self, evaluator: Shell) -> None:
        self.ev = evaluator

    async def handle(self, events: list[faust.EventT]) -> None:
        started = time.perf_counter()
        batches_taken.inc()
        batched_records.inc(len(events))
        segment: list[_Record] = []
        for event in events:
            record = self._record(event)
            if record.item is not None:
                segment.append(record)
                continue
            if segment:
                await self._segment(segment, started)
                segment = []
            direct.handling(event.message.partition)
            await self.ev.handle_safely(event, record.routed)  # flushed and acked
        if segment:
            await self._segment(segment, started)
        await self._flush()

    def _record(self, event: faust.EventT) -> _Record:
        message: Message = event.message
        direct.handling(message.partition)
        try:
            routed = self.ev.route(message)
        except Exception:  # a bug: the per-record path routes it again and dead-letters it
            return _Record(event, None)
        record = _Record(event, routed)
        if isinstance(routed, router.Apply):
            key = attempts.record_key(message.topic, message.partition, message.offset)
            item = Item(routed.user_key, routed.event, now_ms(), message.partition)
            item.alone = routed.event.type == MERGE_EVENT or self.ev.guard.book.get(key) is not None
            record.item = item
        return record

    def _compute(self, segment: list[_Record]) -> dict[bytes, Run]:
        ev = self.ev
        items = [r.item for r in segment if r.item is not None]

        def load(item: Item) -> UserState | None:
            direct.handling(item.partition)
            return user_table.load(ev.users, item.user_key)

        live = ev.rt.live  # one read: the engine and its version agree (live rules)
        call = partial(compute, items, load, live.engine, live.version, ev.hook)
        alarm = ev.guard.alarm
        if alarm.available:
            began = time.monotonic()
            try:
                return alarm.call(call)
            except InlineOverrun:
                held = time.monotonic() - began
                log.info("a batch of %d records overran the inline budget", len(items))
                if held >= ev.guard.threads.budget_s:  # one C operation held the loop
                    for record in segment:
                        message = record.event.message
                        key = attempts.record_key(message.topic, message.partition, message.offset)
                        ev.guard.offload(key)
        return {item.user_key: Run(alone=True) for item in items}

    async def _segment(self, segment: list[_Record], started: float) -> None:
        ev = self.ev
        runs = self._compute(segment)
        if any(run.alone for run in runs.values()):
            await asyncio.sleep(0)  # the loop's turn before any per-record attempt
        try:
            await self._publish(segment, runs, started)
            for user_key, run in runs.items():
                if run.plan is not None and not run.alone:
                    direct.handling(run.partition)
                    ev.partition = run.partition
                    ev.store(user_key, run.plan)
        except Exception as exc:  # Kafka, or a bug outside the engine: nothing stored yet
            log.warning("publishing a batch failed (%r); record by record", exc)
            for record in segment:
                if not record.done:
                    direct.handling(record.event.message.partition)
                    await ev.handle_safely(record.event, record.routed, alone=False)
        for record in segment:  # step 5, in the partition's order
            direct.handling(record.event.message.partition)
            ev.checkpoint.after_sent(record.event.ack)

    async def _publish(
        self, segment: list[_Record], runs: dict[bytes, Run], started: float
    ) -> None:
        ev = self.ev
        for record in segment:
            item = record.item
            assert item is not None
            direct.handling(item.partition)
            ev.partition = item.partition
            if runs[item.user_key].alone:
                await ev.handle_safely(record.event, record.routed, alone=False)
                record.done = True
            elif item.duplicate:
                metrics.events_duplicate.inc()
            else:
                metrics.events_applied.inc()
                await ev.publish(item.user_key, item.records, started)

    async def _flush(self) -> None:
        """Send the batch's writes; Kafka errors are retried, as the per-record path does."""
        delay = 0.5
        while True:
            try:
                await self.ev.flush()
                return
            except _KAFKA_ERRORS as exc:
                log.warning(
                    "Kafka unavailable flushing a batch (%r); retrying in %.1fs", exc, delay
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
            except Exception:  # as the per-record path: the next flush tries again
                log.exception("flushing a batch failed")
                return
