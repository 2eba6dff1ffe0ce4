"""The deliver agent acks each partition in offset order, never past an unsettled record
(agents/flights.py): Faust's commit would step over one unacked record."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from nudgeflow.agents.flights import InOrderAcks


class Stream:
    def __init__(self) -> None:
        self.acked: list[tuple[int, int]] = []

    async def ack(self, event: Any) -> bool:
        self.acked.append((event.message.partition, event.message.offset))
        return True


def event(partition: int, offset: int) -> Any:
    tp = ("t", partition)
    return SimpleNamespace(message=SimpleNamespace(tp=tp, partition=partition, offset=offset))


async def test_acks_wait_for_every_earlier_record_of_the_partition() -> None:
    stream, acks = Stream(), InOrderAcks()
    p0 = [acks.add(stream, event(0, o)) for o in range(3)]
    p1 = acks.add(stream, event(1, 0))
    await acks.settled(p0[2], True)
    await acks.settled(p1, True)  # another partition: not held up
    await acks.settled(p0[1], True)
    assert stream.acked == [(1, 0)]
    await acks.settled(p0[0], True)
    assert stream.acked == [(1, 0), (0, 0), (0, 1), (0, 2)]


async def test_nothing_is_acked_past_a_record_that_was_handed_back() -> None:
    stream, acks = Stream(), InOrderAcks()
    first, second, third = (acks.add(stream, event(0, o)) for o in range(3))
    await acks.settled(second, True)
    await acks.settled(first, False)  # handed back: read again by the next owner
    await acks.settled(third, True)
    assert stream.acked == []
    acks.reset()  # the next assignment starts over from the committed offset
    again = acks.add(stream, event(0, 0))
    await acks.settled(again, True)
    assert stream.acked == [(0, 0)]
