"""Faust's consumer, except that it never commits over a record an agent did not finish.

Invariants:
* A jump in a partition's offsets on a topic that can have no gaps (anything but a
  table changelog: ours are neither compacted nor transactional) is not committed
  past: the partition seeks back and the fetcher reads the skipped records again.
  Right after a seek the next record must be the one sought (Faust only checks for a
  jump of two past the last record read, so a fetch that started one record past a
  seek went through). At worst a record is handed out twice, which at-least-once
  processing allows (the engine drops a repeated event; the deliver agent, a repeated
  trigger). Records that retention deleted are a real gap and Faust's handling applies.
* A record counts as handed out only once an agent took it from its queue: a record whose
  hand-over a rebalance cut short is read again, and so are the records Faust's flow
  control drops from the agents' queues when it resumes after a rebalance (it clears
  them on every resume, after the seek to the committed offsets has let the fetcher
  hand some out: the first of them was lost, the rest stalled the partition's commits).
* An ack counts only for a record of the current generation while the flow runs. Faust
  acks every record its stream skips during a rebalance (flow stopped, or fetched in the
  previous generation) without handing it to the agent, and an agent may finish a
  record after its partition was revoked; either ack, kept across the rebalance, let a
  commit step over the records before it. Such a record is read again instead.
* No commit past the lowest unacknowledged offset: Faust's gap check
  (`Consumer._new_offset`, `min(acked) - committed > 1`) lets one unacknowledged
  record right after the committed offset through, and does not check at all while it
  has no committed offset for the partition yet.
* A fetch of idle partitions is held by the broker at most `FETCH_MAX_WAIT_MS`, not
  Faust's hard-coded 1.5 s, so a busy partition's next records never wait behind it.
* A record that nothing blocks is handed over in place (`_hand_over`), not through
  Faust's per-record race of four tasks against the flow's suspension; that race, kept
  for a record that does block, cost a worker about two thirds of its CPU per event
  (docs/performance.md, "Latency and layer figures").

The method below is faust-streaming 0.15's `_drain_messages` (pyproject.toml pins the
minor version) with only the gap branch and the hand-over check changed. Why each exists,
with the lost triggers and the held events that found them: docs/reliability.md ("Records
Faust's consumer stepped over after a restart", "Lost upstream in rolling restarts") and
docs/performance.md ("Consumer").
"""

from __future__ import annotations

import asyncio
import logging
import types
from collections.abc import Coroutine, Generator
from typing import Any, cast

import faust
from aiokafka import AIOKafkaConsumer
from faust.transport.consumer import CONSUMER_FETCHING
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP, Message
from faust.types.transports import TransportT
from mode import Service, ServiceT
from mode.utils.objects import cached_property
from mode.utils.queues import FlowControlEvent

from nudgeflow.observability import metrics

log = logging.getLogger(__name__)

MAX_SEEKS = 20  # per jump: a fetch that keeps starting past the seek is a real gap
# The most an event can wait behind a held fetch of idle partitions (see above); an
# idle worker sends ~1000 / FETCH_MAX_WAIT_MS fetches a second, ~5% of a core at 50.
FETCH_MAX_WAIT_MS = 50


class KafkaConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    """Faust's consumer thread with the fetch wait above."""

    def _create_worker_consumer(self, transport: Any) -> AIOKafkaConsumer:
        consumer = super()._create_worker_consumer(transport)
        consumer._fetch_max_wait_ms = FETCH_MAX_WAIT_MS  # start() hands it to the fetcher
        return consumer

    async def seek_on_thread(self, partition: TP, offset: int) -> None:
        self.seek(partition, offset)  # runs on this thread's loop: see GaplessConsumer._seek


class GaplessConsumer(faust_aiokafka.Consumer):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # tp -> (offset sought back to, highest stale offset dropped since, seeks)
        self._rewound: dict[TP, tuple[int, int, int]] = {}
        # Partitions whose read offset is a seek position (the next record to read), not
        # the last record read: their next record must have exactly that offset.
        self._sought: set[TP] = set()
        self._seeking: set[asyncio.Future[None]] = set()  # `read_again`'s seeks

    def _new_consumer_thread(self) -> faust_aiokafka.AIOKafkaConsumerThread:
        thread_class = getattr(self.app, "consumer_thread", KafkaConsumerThread)
        return cast(KafkaConsumerThread, thread_class(self, loop=self.loop, beacon=self.beacon))

    async def seek(self, partition: TP, offset: int) -> None:
        await super().seek(partition, offset)
        self._sought.add(partition)

    async def _seek(self, partition: TP, offset: int) -> None:
        """On the consumer thread, where aiokafka's fetcher runs (Faust's own `seek_wait`
        does the same). Faust seeks from this loop, and aiokafka's fetcher is not
        thread-safe: a seek that drops a partition's buffer while the thread drains it in
        `fetched_records` made it raise KeyError, crash the fetcher and exit the worker
        (a fresh-clone CI run of the kill -9 test, right after a restart's `read_again`)."""
        thread = cast(KafkaConsumerThread, self._thread)
        await thread.call_thread(thread.seek_on_thread, partition, offset)

    def read_again(self, offsets: dict[TP, int]) -> None:
        """The records from these offsets on were handed out but taken back unread."""
        for tp, offset in offsets.items():
            self._read_offset[tp] = offset
            self._sought.add(tp)
            self._rewound.pop(tp, None)
            task = asyncio.ensure_future(self._seek_back(tp, offset))
            self._seeking.add(task)
            task.add_done_callback(self._seeking.discard)

    async def _seek_back(self, tp: TP, offset: int) -> None:
        try:
            await self.seek(tp, offset)
        except Exception as exc:  # revoked meanwhile: its new owner reads it from the commit
            log.info("%s[%d]: no seek back to %d (%r)", *tp, offset, exc)

    async def perform_seek(self) -> None:
        """Seek every partition to its committed offset (Faust's; noted as seek positions).

        A read-again in progress is over: its "rest of the batch" bookkeeping would drop
        every record after the new position, which no later seek would bring back."""
        await super().perform_seek()
        self._rewound.clear()
        self._sought.update(tp for tp, offset in self._read_offset.items() if offset is not None)

    def ack(self, message: Message) -> bool:
        """Faust's ack, for a record handed out in this generation while the flow runs.

        Any other ack (a record Faust's stream skipped during a rebalance, or one an
        agent finished after its partition was revoked) is dropped: the record is read
        again, here or by the partition's new owner."""
        app = self.app
        current = getattr(message, "generation_id", None) == app.consumer_generation_id
        if current and app.flow_control.is_active():
            return bool(super().ack(message))
        if not message.acked:
            message.acked = True  # final: a later call must not count it either
            self._unacked_messages.discard(message)
            log.debug("%s[%d]@%d: ack dropped (rebalanced)", *message.tp, message.offset)
        return False

    def _new_offset(self, tp: TP) -> int | None:
        """Faust's, but never past an offset that is neither acked nor a known gap."""
        acked = self._acked[tp]
        committed = self._committed_offset[tp]
        if acked and committed is not None:
            lowest = min(acked)
            gaps = self._gap.get(tp)
            if gaps:
                lowest = min([lowest, *(gap.begin for gap in gaps.overlap(0, max(acked)))])
            if lowest > committed:
                return None
        return cast("int | None", super()._new_offset(tp))

    async def _add_gap(self, tp: TP, offset_from: int, offset_to: int) -> None:
        """Faust's, except that the committed offset (the next record to read, which
        Faust's version leaves out) can be part of a gap."""
        committed = self._committed_offset[tp]
        if committed is not None:
            offset_from = max(offset_from, committed)
        if offset_from <= offset_to:
            gaps = self._gap[tp]
            gaps.addi(offset_from, offset_to + 1)
            await asyncio.sleep(0)
            gaps.merge_overlaps()

    async def _on_jump(self, tp: TP, r_offset: int, offset: int) -> bool:
        """True: drop this record (it is read again later); False: a real gap."""
        if self._is_changelog_tp(tp):  # compacted: gaps are real
            return False
        to, last, seeks = self._rewound.get(tp, (r_offset, -1, 0))
        if offset > last and seeks:  # the rest of a batch fetched before the seek
            self._rewound[tp] = (to, offset, seeks)
            return True
        if seeks >= MAX_SEEKS or not await self._still_there(tp, to):
            log.error("%s[%d]: records from %d are gone; skipping to %d", *tp, to, offset)
            self._rewound.pop(tp, None)
            return False
        metrics.consumer_rewinds.labels(topic=tp.topic).inc()
        log.warning("%s[%d]: offset %d came after %d; reading again", *tp, offset, to)
        self._rewound[tp] = (to, offset, seeks + 1)
        await self.seek(tp, to)
        return True

    async def _still_there(self, tp: TP, offset: int) -> bool:
        """Whether retention has kept the record after `offset` (a broker request)."""
        try:
            earliest = (await self.earliest_offsets(tp)).get(tp, 0)
        except Exception:  # the broker may be gone: assume the records are kept
            return True
        return earliest <= offset + 1

    async def _hand_over(self, message: Message) -> bool:
        """Put the record in its agents' queues (Faust's conductor callback); False if the
        flow stopped first (a rebalance: it is read again) or the consumer is stopping.

        The callback's first step runs right here: it only suspends when the flow is
        stopped, the producer buffer is full or a queue is. Only then does the rest race
        the flow's suspension as Faust's drain does for every record (`wait_first`: four
        tasks, their cancellations and a turn of the event loop per record)."""
        handing = cast(Coroutine[Any, Any, Any], self.callback(message))
        try:
            blocked_on = handing.send(None)
        except StopIteration:  # handed over (as `wait_first`, not while stopping)
            return not (self._stopped.is_set() or self._crashed.is_set())
        rest = asyncio.ensure_future(_finish(handing, blocked_on))
        took = await self.wait_first(rest, self.suspend_flow.wait())
        return rest in took.done

    async def _drain_messages(self, fetcher: ServiceT) -> None:
        getmany = self.getmany
        consumer_should_stop = cast(Service, self)._stopped.is_set
        fetcher_should_stop = cast(Service, fetcher)._stopped.is_set

        get_read_offset = self._read_offset.__getitem__
        set_read_offset = self._read_offset.__setitem__
        set_flag = self.diag.set_flag
        unset_flag = self.diag.unset_flag
        commit_every = self._commit_every
        acks_enabled_for = self.app.topics.acks_enabled_for
        rewound = self._rewound
        sought = self._sought

        yield_every = 100
        num_since_yield = 0
        sleep = asyncio.sleep

        try:
            while not (consumer_should_stop() or fetcher_should_stop()):
                set_flag(CONSUMER_FETCHING)
                ait = cast(Any, getmany(timeout=1.0))
                await self.sleep(0)
                if not self.should_stop:
                    async for tp, message in ait:
                        num_since_yield += 1
                        if num_since_yield > yield_every:
                            await sleep(0)
                            num_since_yield = 0

                        offset = message.offset
                        r_offset = get_read_offset(tp)
                        if r_offset is None or offset >= r_offset:
                            # `r_offset` is the last record read or, right after a seek,
                            # the next one to read: the offset this record must have.
                            expected = offset if r_offset is None else r_offset
                            if r_offset is not None and tp not in sought:
                                expected += 1
                            if (
                                r_offset is not None
                                and offset > expected
                                and acks_enabled_for(message.topic)
                            ):
                                if await self._on_jump(tp, r_offset, offset):
                                    continue  # read again from `r_offset`
                                await self._add_gap(tp, expected, offset - 1)
                            elif rewound:
                                rewound.pop(tp, None)
                            if commit_every is not None and self._n_acked >= commit_every:
                                self._n_acked = 0
                                await self.commit()
                            if not await self._hand_over(message):
                                continue  # the flow stopped first: not handed out
                            set_read_offset(tp, offset)
                            sought.discard(tp)
                    unset_flag(CONSUMER_FETCHING)

        except self.consumer_stopped_errors:
            if self.transport.app.should_stop:
                self.log.info("Broker stopped consumer, shutting down...")
                return
            raise
        except asyncio.CancelledError:
            if self.transport.app.should_stop:
                self.log.info("Consumer shutting down for user cancel.")
                return
            raise
        except Exception as exc:
            self.log.exception("Drain messages raised: %r", exc)
            raise
        finally:
            unset_flag(CONSUMER_FETCHING)


@types.coroutine
def _resume(coro: Coroutine[Any, Any, Any], blocked_on: Any) -> Generator[Any, Any, Any]:
    """Run a coroutine whose first step already ran, and yielded `blocked_on` (the future
    it waits for), to its end, as the `await` that would have driven it."""
    while True:
        try:
            sent = yield blocked_on
        except GeneratorExit:
            coro.close()
            raise
        except BaseException as exc:  # a cancellation, or an error thrown in: passed on
            try:
                blocked_on = coro.throw(exc)
            except StopIteration as stop:
                return stop.value
        else:
            try:
                blocked_on = coro.send(sent)
            except StopIteration as stop:
                return stop.value


async def _finish(coro: Coroutine[Any, Any, Any], blocked_on: Any) -> Any:
    return await _resume(coro, blocked_on)


class RereadingFlowControl(FlowControlEvent):
    """Faust's flow control; the records a resume drops from the agents' queues (it clears
    them every time) are read again instead of being skipped."""

    def __init__(self, app: faust.App, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._app = app

    def clear(self) -> None:
        dropped: dict[TP, int] = {}
        for queue in list(self._queues):
            for item in list(getattr(queue, "_queue", ())):
                message = getattr(item, "message", None)
                if message is not None:  # an event (not a changelog record, not a value)
                    tp, offset = message.tp, message.offset
                    dropped[tp] = min(offset, dropped.get(tp, offset))
        super().clear()
        # Only when resuming: a suspension (revocation, stop) seeks again anyway.
        consumer = self._app.consumer
        if dropped and self.is_active() and isinstance(consumer, GaplessConsumer):
            log.info("records taken back from the agents' queues, read again: %s", dropped)
            consumer.read_again(dropped)


class GaplessTransport(faust_aiokafka.Transport):
    Consumer = GaplessConsumer


class App(faust.App):
    """faust.App on the aiokafka transport with the consumer above."""

    # What runs aiokafka's consumer: its own thread, or the worker's loop
    # (pipeline/loop_consumer.py, set by `create_app`).
    consumer_thread: type[KafkaConsumerThread] = KafkaConsumerThread

    def _new_transport(self) -> TransportT:
        return GaplessTransport(self.conf.broker_consumer, self)

    @cached_property
    def flow_control(self) -> FlowControlEvent:
        return RereadingFlowControl(self, loop=self.loop)
