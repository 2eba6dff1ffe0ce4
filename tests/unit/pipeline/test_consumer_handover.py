"""How the consumer hands a record to the agents (pipeline/consumer.py, `_hand_over`): at
once when nothing blocks it, and otherwise only if it got into a queue before the flow
stopped; a record the flow stopped first never reaches a queue later (it is read again).

The consumer is built without starting it (no Kafka); its callback is Faust's conductor
reduced to what matters here: wait for the flow control, then put the record in a queue.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from faust.types import Message
from mode.utils.locks import Event
from mode.utils.queues import FlowControlEvent, FlowControlQueue

from nudgeflow.pipeline.consumer import GaplessConsumer


def _message(offset: int) -> Message:
    return Message("p.events", 0, offset, 0.0, 0, None, b"k", b"v", None)


class _Agents:
    """The agents' side: a flow control and one queue, filled by `deliver`."""

    def __init__(self, active: bool = True) -> None:
        self.flow = FlowControlEvent(initially_suspended=not active)
        self.queue: FlowControlQueue[Message] = FlowControlQueue(flow_control=self.flow)

    async def deliver(self, message: Message) -> None:
        await self.flow.acquire()
        self.queue.put_nowait(message)

    def taken(self) -> list[int]:
        return [m.offset for m in list(self.queue._queue)]  # type: ignore[attr-defined]


def _consumer(agents: _Agents) -> Any:
    c: Any = object.__new__(GaplessConsumer)
    c.callback = agents.deliver
    c.suspend_flow = Event()
    c._stopped, c._crashed = Event(), Event()
    c._loop = asyncio.get_running_loop()
    return c


async def test_a_record_nothing_blocks_is_handed_over_at_once() -> None:
    agents = _Agents()
    c = _consumer(agents)
    assert await GaplessConsumer._hand_over(c, _message(1)) is True
    # Without a single loop iteration (no task per record): its first step finishes it.
    stepping = GaplessConsumer._hand_over(c, _message(2))
    with pytest.raises(StopIteration) as finished:
        stepping.send(None)
    assert finished.value.value is True
    assert agents.taken() == [1, 2]


async def test_a_blocked_record_is_handed_over_once_the_flow_resumes() -> None:
    agents = _Agents(active=False)
    c = _consumer(agents)
    handing = asyncio.ensure_future(GaplessConsumer._hand_over(c, _message(3)))
    await asyncio.sleep(0.01)
    assert not handing.done() and agents.taken() == []
    agents.flow.resume()
    assert await handing is True
    assert agents.taken() == [3]


async def test_a_record_the_flow_stopped_first_is_not_handed_and_never_queued() -> None:
    agents = _Agents(active=False)
    c = _consumer(agents)
    handing = asyncio.ensure_future(GaplessConsumer._hand_over(c, _message(4)))
    await asyncio.sleep(0.01)
    c.suspend_flow.set()  # a rebalance: the drain moves on, the record is read again
    assert await handing is False
    agents.flow.resume()
    await asyncio.sleep(0.01)
    assert agents.taken() == []  # the blocked delivery was cancelled, not left pending


async def test_nothing_counts_as_handed_while_the_consumer_stops() -> None:
    agents = _Agents()
    c = _consumer(agents)
    c._stopped.set()
    assert await GaplessConsumer._hand_over(c, _message(5)) is False


async def test_an_error_after_the_record_blocked_reaches_the_drain() -> None:
    agents = _Agents(active=False)
    c = _consumer(agents)

    async def failing(message: Message) -> None:
        await agents.flow.acquire()
        raise ValueError(f"bad {message.offset}")

    c.callback = failing
    handing = asyncio.ensure_future(GaplessConsumer._hand_over(c, _message(6)))
    await asyncio.sleep(0.01)
    agents.flow.resume()
    with pytest.raises(ValueError, match="bad 6"):
        await handing
