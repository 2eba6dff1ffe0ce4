"""Dedupe marks are bounded (issue 22.3): each expires after the retry horizon plus a margin,
and is removed from the table (a tombstone in its changelog) as later records settle.

The horizon is shortened to ~2 s (one 200 ms retry, a 1 s Retry-After cap, a 1 s margin);
docs/reliability.md has the soak that shows the table flat over a long run.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from nudgeflow.config.destinations import DeliverySettings
from nudgeflow.tables import delivered
from tests.fixtures.kafka import consume_all
from tests.fixtures.receivers import ReceiverFactory
from tests.integration.delivery.conftest import (
    DeliverWorker,
    StartWorker,
    make_trigger,
    wait_until,
)

pytestmark = pytest.mark.kafka

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SHORT = {"retry_schedule": ["200ms"], "jitter": 0, "max_retry_after": "1s", "dedupe_margin": "1s"}
BATCH = 20


async def live_keys(worker: DeliverWorker) -> set[bytes]:
    """The table's keys as its changelog says now (last record per key; None deletes)."""
    topic = f"{worker.spec['app_id']}-{delivered.NAME}-changelog"
    state: dict[bytes, bytes | None] = {}
    for r in await consume_all(worker.spec["broker"], topic, timeout=5):
        assert r.key is not None
        state[r.key] = r.value
    return {k for k, v in state.items() if v is not None}


async def test_marks_expire_after_the_horizon_and_leave_the_table(
    start_deliver_worker: StartWorker, receiver_factory: ReceiverFactory
) -> None:
    rx = await receiver_factory()
    dest: dict[str, Any] = {"url": rx.url, "secret": SECRET, "allow_private": True}
    worker = await start_deliver_worker({"d": dest}, SHORT)
    ttl_s = DeliverySettings(**SHORT).mark_ttl_s
    first = [f"trg-a{n}" for n in range(BATCH)]
    await worker.produce([make_trigger(f"a{n}", ["d"]) for n in range(BATCH)])
    await wait_until(lambda: set(rx.ids(200)) >= set(first), 90, "batch a", worker)
    a_marks = {delivered.key(t, "d") for t in first}
    assert a_marks <= await live_keys(worker)

    expired_at = time.monotonic() + ttl_s + 0.5  # the marks' whole life, by design
    await wait_until(lambda: time.monotonic() >= expired_at, ttl_s + 5, "the horizon")
    second = [f"trg-b{n}" for n in range(BATCH)]
    await worker.produce([make_trigger(f"b{n}", ["d"]) for n in range(BATCH)])
    await wait_until(lambda: set(rx.ids(200)) >= set(second), 30, "batch b", worker)

    b_marks = {delivered.key(t, "d") for t in second}

    async def a_gone() -> bool:
        return not (a_marks & await live_keys(worker))

    deadline = time.monotonic() + 15
    while not await a_gone():
        assert time.monotonic() < deadline, "batch a's marks are still in the table"
        await asyncio.sleep(0.5)
    live = await live_keys(worker)
    assert b_marks <= live  # the young ones stay...
    marks = {k for k in live if not k.startswith(delivered.INDEX)}
    index = {k for k in live if k.startswith(delivered.INDEX)}
    assert marks == b_marks and len(index) == len(b_marks)  # ...and nothing else

    # Within the horizon dedupe still holds: an upstream repeat of b0 is not sent again.
    await worker.produce([make_trigger("b0", ["d"]), make_trigger("marker", ["d"])])
    await wait_until(lambda: "trg-marker" in rx.ids(200), 30, "the marker", worker)
    assert rx.ids(200).count("trg-b0") == 1
