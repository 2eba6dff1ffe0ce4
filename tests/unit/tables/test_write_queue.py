"""What a hold blocks and what it lets through, in order (tables/write_queue.py)."""

from __future__ import annotations

import asyncio
from typing import Any

from nudgeflow.tables.write_queue import Marker, Write, WriteQueue


def _queue() -> tuple[WriteQueue, list[str]]:
    calls: list[str] = []
    queue = WriteQueue(
        on_release=lambda: calls.append("released"),
        on_failed=lambda p, e: calls.append(f"failed {p}: {e}"),
    )
    return queue, calls


def _keys(items: list[Write | Marker]) -> list[bytes | str]:
    return [item.key if isinstance(item, Write) else "marker" for item in items]


async def test_a_pending_hold_blocks_the_rest_of_its_partition_only() -> None:
    queue, calls = _queue()
    ack: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    queue.write(Write(0, b"a1", b"x"))
    queue.hold(0, ack)
    queue.write(Write(0, b"a2", b"x"))
    queue.write(Write(1, b"b1", b"x"))
    queue.mark(0, lambda: None)

    assert _keys(queue.ready()) == [b"a1", b"b1"]
    assert queue.writes == 1
    assert _keys(queue.ready()) == []  # still held; the callback is put on once

    ack.set_result(None)
    await asyncio.sleep(0)
    assert calls == ["released"]
    assert _keys(queue.ready()) == [b"a2", "marker"]
    assert queue.writes == 0 and not queue


async def test_a_marker_with_nothing_queued_in_its_partition_runs_at_once() -> None:
    queue, _ = _queue()
    queue.write(Write(1, b"b1", b"x"))
    ran: list[int] = []
    queue.mark(0, lambda: ran.append(0))
    queue.mark(1, lambda: ran.append(1))
    assert ran == [0]
    assert _keys(queue.ready()) == [b"b1", "marker"]


async def test_items_put_back_come_first_again() -> None:
    queue, _ = _queue()
    queue.write(Write(0, b"a1", b"x"))
    queue.write(Write(0, b"a2", b"x"))
    taken = queue.ready()
    queue.write(Write(0, b"a3", b"x"))
    queue.put_back(taken[1:])  # a1 was sent, a2 failed to queue
    assert queue.writes == 2
    assert _keys(queue.ready()) == [b"a2", b"a3"]


async def test_a_failed_hold_is_reported_once_and_keeps_blocking() -> None:
    queue, calls = _queue()
    ack: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    ack.set_exception(RuntimeError("gave up"))
    queue.hold(2, ack)
    queue.write(Write(2, b"c1", b"x"))
    assert _keys(queue.ready()) == []
    assert _keys(queue.ready()) == []
    assert calls == ["failed 2: gave up"]


async def test_dropping_a_partition_forgets_its_items() -> None:
    queue, _ = _queue()
    queue.hold(0, asyncio.get_running_loop().create_future())
    queue.write(Write(0, b"a1", b"x"))
    queue.write(Write(1, b"b1", b"x"))
    queue.drop({0})
    assert queue.writes == 1
    assert _keys(queue.ready()) == [b"b1"]
