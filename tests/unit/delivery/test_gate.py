"""The gate: slots, parking, the probe, the ramp and the pace (real asyncio, short times)."""

from __future__ import annotations

import asyncio
import time

import pytest

from nudgeflow.config.destinations import Destination
from nudgeflow.delivery.breaker import BreakerPolicy, State
from nudgeflow.delivery.gate import Gate, Pass
from nudgeflow.delivery.share import Share

POLICY = BreakerPolicy(window_s=60.0, min_calls=4, failure_ratio=0.7, reset_s=0.2)


def gate(**kw: object) -> Gate:
    dest = Destination(url="https://example.com/hook", **kw)  # type: ignore[arg-type]
    return Gate("d", dest, POLICY)


async def trip(g: Gate) -> None:
    for _ in range(POLICY.min_calls):
        p = await g.enter(park=True)
        assert p is not None
        p.done(False)
    assert g.breaker.state is State.OPEN


async def test_slots_are_the_concurrency_and_handed_over_in_order() -> None:
    g = gate(concurrency=2)
    a, b = await g.enter(park=True), await g.enter(park=True)
    order: list[str] = []

    async def wait(name: str) -> Pass:
        p = await g.enter(park=True)
        assert p is not None
        order.append(name)
        return p

    c, d = asyncio.create_task(wait("c")), asyncio.create_task(wait("d"))
    await asyncio.sleep(0.01)
    assert order == [] and g.in_use == 2
    assert a is not None and b is not None
    a.done(True)
    (await c).done(True)
    b.done(True)
    (await d).done(True)
    assert order == ["c", "d"] and g.in_use == 0


async def test_open_circuit_parks_or_waits_for_the_probe() -> None:
    g = gate()
    await trip(g)
    assert await g.enter(park=True) is None  # new deliveries park
    started = time.monotonic()
    probe = await g.enter(park=False)  # the wait topic's agent waits for the reset
    assert probe is not None and probe.probe
    assert time.monotonic() - started >= 0.15
    assert await g.enter(park=True) is None  # one probe at a time
    follower = asyncio.create_task(g.enter(park=False))
    await asyncio.sleep(0.01)
    assert not follower.done()
    probe.done(True)  # recovery: closed, ramping from one
    first = await follower
    assert first is not None and not first.probe and g.limit == 1
    first.done(True)
    assert g.limit == 2


async def test_slot_waiters_park_when_the_circuit_opens() -> None:
    g = gate(concurrency=4)
    holding = [await g.enter(park=True) for _ in range(4)]
    waiter = asyncio.create_task(g.enter(park=True))
    await asyncio.sleep(0.01)
    for p in holding:
        assert p is not None
        p.done(False)  # 4 of 4 failed: open; the waiter is told to look again
    assert await waiter is None
    assert g.in_use == 0


async def test_a_failed_probe_reopens() -> None:
    g = gate()
    await trip(g)
    probe = await g.enter(park=False)
    assert probe is not None
    probe.done(False)
    assert g.breaker.state is State.OPEN and await g.enter(park=True) is None


async def test_a_pass_is_finished_once_and_cancelled_waiters_leak_nothing() -> None:
    g = gate(concurrency=1)
    p = await g.enter(park=True)
    assert p is not None
    waiter = asyncio.create_task(g.enter(park=True))
    await asyncio.sleep(0.01)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    p.done(True)
    p.done(True)
    assert g.in_use == 0
    again = await g.enter(park=True)
    assert again is not None and g.in_use == 1


async def test_pace_is_the_workers_share_of_the_rate() -> None:
    g = gate(rate_limit="20/s", concurrency=8)
    g.reshare(Share.of([0], 2))  # one of two partitions: 10/s, 4 concurrent
    assert g.rate_per_s == 10.0 and g.limit == 4
    started = time.monotonic()
    for _ in range(6):
        p = await g.enter(park=True)
        assert p is not None
        await g.pace()
        p.done(True)
    elapsed = time.monotonic() - started
    assert 0.45 <= elapsed < 1.0  # 6 calls at 10/s, no burst: 5 gaps of 0.1 s
