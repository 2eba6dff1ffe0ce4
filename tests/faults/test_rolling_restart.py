"""Rolling restarts (issue 22.4): two workers, each stopped with SIGTERM and started again in
turn under 200 events/s; every trigger delivered exactly once.

A deploy stops workers with SIGTERM, one at a time. Each stop moves the stopped worker's
partitions to the other (a rebalance, during which the survivor also hands back and
re-reads its own), and each start moves some back. Unlike a kill -9 (test_worker_crash.py,
where a webhook in flight may be sent twice), nothing here may arrive twice: the stopping
worker finishes its calls in flight and flushes their `delivered` marks before it leaves,
and no source record is committed over unless an agent finished it in the current
assignment (pipeline/consumer.py: the upstream loss this test used to find).

CI runs one cycle (both workers restarted once); NUDGEFLOW_SLOW=1 runs three
(docs/reliability.md).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import msgspec
import pytest

from tests.faults.conftest import (
    SLOW,
    Tally,
    Workload,
    duplicated_ids,
    expected_triggers,
    fault_config,
    kind_of,
    lost_triggers,
    names,
    produce_events,
    ready,
    report,
    wait_delivered,
)
from tests.fixtures.kafka import consume_all
from tests.fixtures.receivers import ReceiverFactory
from tests.fixtures.workers import WorkerProcess

pytestmark = [
    pytest.mark.load,
    pytest.mark.kafka,
    pytest.mark.timeout(1800 if SLOW else 600),
]

CYCLES = 3 if SLOW else 1
EVENTS_PER_S = 200
SETTLE_S = 3.0  # load before the first stop, and between restarts


async def trigger_ids(bootstrap: str, topic: str) -> set[str]:
    """The trigger ids the evaluate side wrote (what delivery had to deliver)."""
    records = await consume_all(bootstrap, topic, timeout=30)
    return {msgspec.json.decode(r.value or b"{}")["trigger_id"] for r in records}


async def restart(worker: WorkerProcess) -> dict[str, float]:
    """SIGTERM, wait for the exit, start on the same data dir, wait until ready."""
    began = time.monotonic()
    await asyncio.to_thread(worker.stop)
    assert worker.proc is not None
    code = worker.proc.returncode
    stopped = time.monotonic()
    worker.start()
    await ready(worker)
    return {
        "exit_code": code,
        "stop_s": round(stopped - began, 1),
        "down_to_ready_s": round(time.monotonic() - began, 1),
    }


async def test_rolling_sigterm_restarts_lose_and_double_nothing(
    start_worker, receiver_factory: ReceiverFactory, tmp_path: Path
) -> None:
    rx = await receiver_factory()
    config = fault_config(tmp_path / "nudgeflow.yaml", {"hook": rx.url})
    tag = names("rolling")
    workers = [start_worker(config, wait=False, **tag) for _ in range(2)]
    for w in workers:
        await ready(w)
    load = Workload()
    done = asyncio.Event()

    async def feed() -> None:
        n = 0
        while not done.is_set():
            users: list[int] = []
            while sum(len(kind_of(u)) for u in users) < EVENTS_PER_S:
                users.append(n)
                n += 1
            batch = load.wave(users, kind_of)
            await produce_events(workers[0].broker, f"{workers[0].prefix}.events", batch)
            await asyncio.sleep(1.0)

    restarts: list[dict[str, float]] = []

    async def roll() -> None:
        try:
            for _ in range(CYCLES):
                for w in workers:
                    await asyncio.sleep(SETTLE_S)
                    restarts.append(await restart(w))
            await asyncio.sleep(SETTLE_S)
        finally:
            done.set()

    began = time.monotonic()
    await asyncio.gather(feed(), roll())
    # In a thread: the receiver shares this loop, and a call it answers after the sender's
    # timeout is sent again (a duplicate this test would count against the workers).
    expected = await asyncio.to_thread(
        expected_triggers, config, load.events, tmp_path / "backtest"
    )
    finished = await wait_delivered(rx, expected, workers, stall_s=30.0)
    await asyncio.sleep(5.0)  # a late second copy would show up now
    tally = Tally.of(rx, expected)
    produced = await trigger_ids(workers[0].broker, f"{workers[0].prefix}.triggers")
    delivered = {i for i in rx.ids(200) if i is not None}
    report(
        "rolling-restart",
        {
            "cycles": CYCLES,
            "events": len(load.events),
            "events_per_s": EVENTS_PER_S,
            **tally.__dict__,
            "duplicated_ids": duplicated_ids(rx),
            "restarts": restarts,
            "all_delivered_after_s": round(finished - began, 1) if finished else None,
            "lost_triggers": lost_triggers(rx, expected),
            "lost_upstream": sorted(set(expected) - produced),
        },
    )
    assert all(r["exit_code"] == 0 for r in restarts), restarts
    # Delivery: every trigger on <prefix>.triggers reached the receiver, exactly once.
    assert sorted(produced - delivered) == [], "delivery lost triggers it had read"
    assert tally.duplicates == 0, f"{tally.line()} {duplicated_ids(rx)}"
    # End to end: the evaluate side wrote every trigger the backtest fires.
    lost_upstream = sorted(set(expected) - produced)
    assert lost_upstream == [], f"never written to <prefix>.triggers: {lost_upstream}"
    assert (tally.lost, tally.unexpected) == (0, 0), tally.line()
