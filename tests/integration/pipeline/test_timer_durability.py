"""Durable timers (issue 3): kill -9 a worker with 1,000 armed timers; none is lost."""

from __future__ import annotations

import asyncio
import collections
import time
from pathlib import Path

import msgspec
import pytest

from tests.fixtures.kafka import consume_all
from tests.fixtures.metrics import wait_for_metric

pytestmark = pytest.mark.kafka

CONFIG = Path(__file__).parent / "configs" / "timers.yaml"
USERS = 1000


async def _triggers_until_every_user_fired(worker, timeout: float) -> list[dict]:
    """Re-read the topic until every user has a trigger (duplicates may come first)."""
    deadline = time.monotonic() + timeout
    while True:
        records = await consume_all(worker.broker, f"{worker.prefix}.triggers", timeout=10)
        triggers = [msgspec.json.decode(r.value) for r in records]
        if len({t["user_id"] for t in triggers}) >= USERS or time.monotonic() > deadline:
            return triggers
        await asyncio.sleep(1)


async def test_kill_9_with_1000_armed_timers_loses_none(start_worker, evaluate_only, capsys):
    worker = start_worker(CONFIG)
    now = int(time.time() * 1000)
    # Deadlines spread over [now + 6 s, now + 16 s): some fire before the crash, some
    # are in flight when it happens, the rest fall due while the worker is down.
    events = [
        {"event_id": f"arm-{i}", "user_id": f"user-{i}", "type": "arm", "ts": now - 9000 + i * 10}
        for i in range(USERS)
    ]
    for chunk in range(0, USERS, 500):
        status, _ = await worker.post_events(events[chunk : chunk + 500])
        assert status == 202
    await wait_for_metric(worker.url, "nudgeflow_events_applied_total", USERS, timeout=60)

    await asyncio.sleep(max(0.0, (now + 11_000) / 1000 - time.time()))
    worker.kill()
    killed_at = time.time()
    before = len(await consume_all(worker.broker, f"{worker.prefix}.triggers", timeout=5))

    await asyncio.sleep(max(0.0, (now + 17_000) / 1000 - time.time()))  # all are due now
    worker.start()
    worker.wait_ready()
    ready_at = time.time()

    triggers = await _triggers_until_every_user_fired(worker, timeout=120)
    per_user = collections.Counter(t["user_id"] for t in triggers)
    per_id = collections.Counter(t["trigger_id"] for t in triggers)

    assert set(per_user) == {f"user-{i}" for i in range(USERS)}, "a timer was lost"
    assert all(t["rule"] == "remind" for t in triggers)
    # One trigger id per arming: every duplicate record is the same trigger sent again.
    assert len(per_id) == USERS
    late = [t for t in triggers if t["late"]]
    assert late, "timers that fell due while the worker was down fire late, marked late"
    duplicates = len(triggers) - USERS
    with capsys.disabled():
        print(
            f"\n[timer durability] armed={USERS} fired_before_kill={before} "
            f"delivered_records={len(triggers)} distinct={len(per_id)} duplicates={duplicates} "
            f"late={len(late)} max_lateness_s={max(t['lateness_s'] for t in triggers):.1f} "
            f"restart_to_ready_s={ready_at - killed_at:.1f}"
        )
