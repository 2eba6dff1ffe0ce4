"""What the consumer commits (pipeline/consumer.py): never past an unacknowledged record,
never for an ack that a rebalance made stale, and records taken back from the agents are
read again (the rolling-restart loss, issue 22.4).

The consumer's bookkeeping is plain data; the consumer is built without starting it (no
Kafka), and its acks and commit offsets are read as Faust's commit loop reads them.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from types import SimpleNamespace
from typing import Any

from faust.types import TP, Message
from intervaltree import IntervalTree
from mode.utils.queues import FlowControlQueue

from nudgeflow.pipeline.consumer import GaplessConsumer, RereadingFlowControl

TOPIC = "p.events"
PART = TP(TOPIC, 0)


class _Flow:
    def __init__(self) -> None:
        self.active = True

    def is_active(self) -> bool:
        return self.active


def _consumer(committed: int | None = None, generation: int = 5) -> Any:
    """A GaplessConsumer's commit bookkeeping, as Faust's Consumer.__init__ sets it up."""
    c: Any = object.__new__(GaplessConsumer)
    c.app = SimpleNamespace(
        consumer_generation_id=generation,
        flow_control=_Flow(),
        topics=SimpleNamespace(acks_enabled_for=lambda topic: True),
    )
    c._acked = defaultdict(list)
    c._acked_index = defaultdict(set)
    c._committed_offset = defaultdict(lambda: None)
    c._gap = defaultdict(IntervalTree)
    c._unacked_messages = set()
    c._n_acked = 0
    c._waiting_for_ack = None
    if committed is not None:
        c._committed_offset[PART] = committed
    return c


def _message(offset: int, generation: int = 5) -> Message:
    return Message(TOPIC, 0, offset, 0.0, 0, None, b"k", b"v", None, generation_id=generation)


def test_no_commit_past_the_unacknowledged_record_right_after_the_committed_one() -> None:
    c = _consumer(committed=10)
    for offset in (11, 12):  # 10 was handed out but is not acked
        assert c.ack(_message(offset))
    assert c._new_offset(PART) is None  # Faust's own check lets 13 through
    assert c.ack(_message(10))
    assert c._new_offset(PART) == 13


def test_a_known_gap_at_the_committed_offset_still_counts() -> None:
    c = _consumer(committed=10)
    c._gap[PART].addi(10, 12)  # 10 and 11 are gone (retention): nothing to wait for
    assert c.ack(_message(12))
    assert c._new_offset(PART) == 13


def test_acks_of_records_skipped_or_finished_across_a_rebalance_are_not_counted() -> None:
    c = _consumer(committed=10)
    assert c.ack(_message(10))
    c.app.flow_control.active = False  # a revocation began: Faust's stream skips and acks
    skipped = _message(11)
    assert not c.ack(skipped)
    assert skipped.acked  # final: it is read again, never counted later
    c.app.flow_control.active = True
    c.app.consumer_generation_id = 6  # reassigned: a record fetched in generation 5
    assert not c.ack(_message(12, generation=5))
    assert c._new_offset(PART) == 11  # up to 10 only: 11 and 12 are read again
    c._committed_offset[PART] = 11  # (what Faust's commit then records)
    assert c.ack(_message(11, generation=6))
    assert c._new_offset(PART) == 12


class _Event:
    def __init__(self, tp: TP, offset: int) -> None:
        self.message = SimpleNamespace(tp=tp, offset=offset)


async def test_records_a_resume_takes_back_from_the_agents_are_read_again() -> None:
    """Faust's flow control clears every agent queue when it resumes after a rebalance,
    after the seek has let the fetcher hand some records out: they are sought again."""
    other = TP(TOPIC, 1)
    c = _consumer(committed=7)
    c._read_offset = defaultdict(lambda: None, {PART: 8, other: 3})
    c._sought, c._rewound, c._seeking = set(), {}, set()
    sought: list[tuple[TP, int]] = []

    async def seek(tp: TP, offset: int) -> None:
        sought.append((tp, offset))

    c.seek = seek
    flow = RereadingFlowControl(SimpleNamespace(consumer=c))  # type: ignore[arg-type]
    queue: FlowControlQueue[Any] = FlowControlQueue(flow_control=flow, clear_on_resume=True)
    for tp, offset in ((PART, 7), (PART, 8), (other, 3)):
        queue.put_nowait(_Event(tp, offset))
    flow.resume()
    assert queue.empty()
    assert (c._read_offset[PART], c._read_offset[other]) == (7, 3)
    assert c._sought == {PART, other}
    await asyncio.gather(*c._seeking)
    assert sorted(sought) == [(PART, 7), (other, 3)]
    flow.suspend()  # a revocation clears too; its new assignment seeks anyway
    queue.put_nowait(_Event(PART, 9))
    flow.clear()
    assert c._read_offset[PART] == 7
