"""The analytics service: every worker's global view of the audit topics.

A group-less aiokafka consumer reads `<prefix>.triggers`, `.decisions`,
`.deliveries`, `.conversions` and the dead-letter topics from the beginning
(no consumer group: each worker sees every partition, not only its own) and
folds them into `Aggregates`. It serves GET /experiments and the console, and,
once caught up, feeds the global bandit posteriors into the engine so
`allocation: bandit` learns from every worker's exposures, not just this one's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import msgspec
from aiokafka import AIOKafkaConsumer, ConsumerRecord
from aiokafka.structs import TopicPartition
from mode import Service

from nudgeflow.analytics.aggregates import Aggregates, FeedItem
from nudgeflow.delivery.records import DeliveryAttempt
from nudgeflow.engine.actions import Conversion, Decision, Trigger
from nudgeflow.observability import metrics
from nudgeflow.tables import erasure

if TYPE_CHECKING:
    from nudgeflow.engine.core import Engine
    from nudgeflow.pipeline.runtime import Runtime

log = logging.getLogger(__name__)

BANDIT_REFRESH_S = 2.0
# Fetch in bulk: the broker answers once 64 KB are waiting or 250 ms have passed.
# Record by record (aiokafka's default, an answer as soon as one byte is there),
# reading back the audit records cost an evaluate worker a third of its CPU at
# 800 triggers/s (docs/performance.md, runs 8 and 9); the console can be 250 ms
# behind. Bulk fetches return several topics at once: `Aggregates` copes with a
# delivery read before its trigger.
FETCH_MIN_BYTES = 64 * 1024
FETCH_MAX_WAIT_MS = 250
SUBSCRIBER_QUEUE = 1000

_decode_trigger = msgspec.json.Decoder(Trigger).decode
_decode_decision = msgspec.json.Decoder(Decision).decode
_decode_attempt = msgspec.json.Decoder(DeliveryAttempt).decode
_decode_conversion = msgspec.json.Decoder(Conversion).decode


def timers_pending() -> float | None:
    """This worker's `nudgeflow_timers_pending` gauge (None until it is set)."""
    return metrics.REGISTRY.get_sample_value("nudgeflow_timers_pending")


def refresh_bandits(engine: Engine, aggregates: Aggregates) -> list[str]:
    """Replace the engine's per-worker posteriors with the global ones; returns the rules."""
    done = []
    for name, rule in aggregates.rules.items():
        if rule.experiment is not None and rule.experiment.allocation == "bandit":
            engine.bandits[name] = aggregates.bandit(name)
            done.append(name)
    return done


class Analytics(Service):
    """Consumes the audit topics into `self.aggregates`; pushes feed items to subscribers."""

    def __init__(self, rt: Runtime, **kwargs: Any) -> None:
        self.rt = rt
        self.aggregates = Aggregates(rt.config.rules)
        self.caught_up = False
        self.skipped = 0  # undecodable records
        self._subscribers: set[asyncio.Queue[FeedItem]] = set()
        self._consumer: AIOKafkaConsumer | None = None
        t = rt.topics
        self._handlers: dict[str, Callable[[ConsumerRecord[bytes, bytes]], FeedItem | None]] = {
            t.triggers: lambda r: self.aggregates.on_trigger(_decode_trigger(r.value or b"")),
            t.decisions: lambda r: self.aggregates.on_decision(_decode_decision(r.value or b"")),
            t.deliveries: self._delivery,
            t.conversions: self._conversion,
            t.events_dlq: lambda r: self.aggregates.on_dead_letter("events.dlq"),
            t.triggers_dlq: lambda r: self.aggregates.on_dead_letter("triggers.dlq"),
        }
        super().__init__(**kwargs)

    def _delivery(self, record: ConsumerRecord[bytes, bytes]) -> None:
        self.aggregates.on_delivery(_decode_attempt(record.value or b""))

    def _conversion(self, record: ConsumerRecord[bytes, bytes]) -> None:
        self.aggregates.on_conversion(_decode_conversion(record.value or b""))

    # -- subscribers (the console WebSocket) -------------------------------------------

    def subscribe(self) -> asyncio.Queue[FeedItem]:
        queue: asyncio.Queue[FeedItem] = asyncio.Queue(SUBSCRIBER_QUEUE)
        self._subscribers.add(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue[FeedItem]) -> None:
        self._subscribers.discard(queue)

    def _publish(self, item: FeedItem) -> None:
        for queue in self._subscribers:
            with contextlib.suppress(asyncio.QueueFull):  # a slow browser misses items
                queue.put_nowait(item)

    # -- consuming ---------------------------------------------------------------------

    def handle(self, record: ConsumerRecord[bytes, bytes]) -> None:
        handler = self._handlers.get(record.topic)
        if handler is None:
            return
        if erasure.has_header(getattr(record, "headers", None), erasure.FORGET_HEADER):
            return  # a forget record on the triggers topic is no trigger (tables/erasure.py)
        try:
            item = handler(record)
        except (msgspec.DecodeError, msgspec.ValidationError):
            self.skipped += 1
            return
        if item is not None:
            self._publish(item)

    async def on_start(self) -> None:
        s = self.rt.settings
        self._consumer = AIOKafkaConsumer(
            *self._handlers,
            bootstrap_servers=s.broker,
            group_id=None,
            client_id=f"{s.group_id}-analytics",
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            metadata_max_age_ms=5000,
            fetch_min_bytes=FETCH_MIN_BYTES,
            fetch_max_wait_ms=FETCH_MAX_WAIT_MS,
        )
        await self._consumer.start()

    async def on_stop(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()

    @Service.task
    async def _consume(self) -> None:
        consumer = self._consumer
        assert consumer is not None
        targets: dict[TopicPartition, int] | None = None
        while not self.should_stop:
            batches = await consumer.getmany(timeout_ms=500, max_records=2000)
            for records in batches.values():
                for record in records:
                    self.handle(record)
            if not self.caught_up:
                assignment = consumer.assignment()
                if targets is None and assignment:
                    targets = await consumer.end_offsets(list(assignment))
                if targets is not None:
                    self.caught_up = await _reached(consumer, targets)
                    if self.caught_up:
                        log.info("analytics caught up with the audit topics")

    @Service.timer(BANDIT_REFRESH_S)
    async def _refresh(self) -> None:
        if self.caught_up:
            refresh_bandits(self.rt.engine, self.aggregates)

    # -- views -------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """What the console shows besides the feed."""
        agg = self.aggregates
        return {
            "caught_up": self.caught_up,
            "decisions": agg.decision_counters(),
            "triggers": dict(sorted(agg.triggers.items())),
            "sends_by_version": agg.version_sends(),  # per rule, per rules version
            "timers_pending": timers_pending(),
            "dead_letters": {
                "events.dlq": agg.dead_letters["events.dlq"],
                "triggers.dlq": agg.dead_letters["triggers.dlq"],
            },
            "experiments": agg.experiments(),
            "funnels": agg.funnels(),  # per rule and step (GET /rules/<name>)
        }


async def _reached(consumer: AIOKafkaConsumer, targets: dict[TopicPartition, int]) -> bool:
    for tp, end in targets.items():
        if await consumer.position(tp) < end:
            return False
    return True
