"""Rebalance (issue 7.2): two workers share the partitions, one is killed -9; the
survivor takes over its partitions and fires its timers; the victim comes back.

Standby replicas are on, so the survivor already holds a copy of the victim's
tables and takes over without replaying whole changelogs. Timer deadlines are
spread over a minute (events stamped up to 60 s ahead), so the victim's timers
keep falling due before, during and after the takeover. Which partitions were
the victim's comes from the consumer group itself.
"""

from __future__ import annotations

import asyncio
import time
import urllib.request
from pathlib import Path

import pytest

from tests.faults.conftest import (
    PARTITIONS,
    SLOW,
    Tally,
    Workload,
    expected_triggers,
    fault_config,
    group_assignment,
    kill,
    names,
    partition_of,
    produce_events,
    ready,
    report,
    unexplained_duplicates,
    wait_delivered,
)
from tests.fixtures.receivers import Receiver, ReceiverFactory
from tests.fixtures.workers import WorkerProcess

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(1200 if SLOW else 600)]

USERS = 5_000 if SLOW else 1_000
SPREAD_S = 60  # deadlines spread over this long
KILL_AFTER_S = 15.0
INACTIVITY_MS = 4_000
IN_FLIGHT_WINDOW_S = 30.0  # see test_worker_crash


def owned(assignment: dict[str, set[int]], worker: WorkerProcess) -> set[int]:
    return {p for url, parts in assignment.items() if f":{worker.web_port}" in url for p in parts}


def is_ready(worker: WorkerProcess) -> bool:
    try:
        with urllib.request.urlopen(worker.url + "/ready", timeout=2) as resp:
            return resp.status == 200
    except OSError:
        return False


async def wait_owner(
    worker: WorkerProcess, topic: str, parts: set[int], timeout: float = 180.0
) -> float:
    """Poll the group until `worker` owns `parts` of `topic` and says it is ready."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            assignment = await group_assignment(worker.broker, worker.app_id, topic)
        except Exception:  # the coordinator may be busy with the rebalance itself
            assignment = {}
        if parts <= owned(assignment, worker) and await asyncio.to_thread(is_ready, worker):
            return time.monotonic()
        await asyncio.sleep(0.5)
    raise AssertionError(f"{worker.url} did not take over {sorted(parts)} in {timeout}s")


async def first_arrival(rx: Receiver, ids: set[str], timeout: float) -> float | None:
    """When the first of `ids` got a 2xx at `rx` (None if none did within `timeout`)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        arrivals = [r.at for r in rx.requests if r.status == 200 and r.webhook_id in ids]
        if arrivals:
            return min(arrivals)
        await asyncio.sleep(0.2)
    return None


async def test_kill_one_of_two_workers(
    start_worker, receiver_factory: ReceiverFactory, tmp_path: Path
) -> None:
    rx = await receiver_factory()
    config = fault_config(tmp_path / "nudgeflow.yaml", {"hook": rx.url})
    env = {"NUDGEFLOW_STANDBY_REPLICAS": "1"}
    both = names("rebalance")
    survivor = start_worker(config, wait=False, env=env, **both)
    await ready(survivor)
    victim = start_worker(config, wait=False, env=env, **both)
    await ready(victim)
    ticks = f"{both['prefix']}.ticks"
    deadline = time.monotonic() + 120
    while True:  # both members hold partitions before the load starts
        assignment = await group_assignment(survivor.broker, survivor.app_id, ticks)
        if owned(assignment, victim) and owned(assignment, survivor):
            break
        assert time.monotonic() < deadline, f"the group never split: {assignment}"
        await asyncio.sleep(0.5)

    load = Workload()
    events = load.wave(
        range(USERS),
        lambda n: ("arm", "ping") if n % 4 == 0 else ("arm",),
        offset_ms=lambda n: (n % SPREAD_S) * 1000,
    )
    produced = time.monotonic()
    await produce_events(survivor.broker, f"{survivor.prefix}.events", events)
    expected = expected_triggers(config, load.events, tmp_path / "backtest")
    await asyncio.sleep(max(0.0, produced + KILL_AFTER_S - time.monotonic()))

    assignment = await group_assignment(survivor.broker, survivor.app_id, ticks)
    lost_parts = owned(assignment, victim)
    assert lost_parts and owned(assignment, survivor) | lost_parts == set(range(PARTITIONS))
    await kill(victim)
    killed = time.monotonic()
    killed_ms = time.time_ns() // 1_000_000
    took_over = await wait_owner(survivor, ticks, set(range(PARTITIONS)))

    # The victim's timers that were still pending when it died: the survivor fires them.
    deadlines = {e["user_id"]: int(e["ts"]) + INACTIVITY_MS for e in events if e["type"] == "arm"}
    orphans = {
        tid
        for tid, (rule, user, _) in expected.items()
        if rule == "nudge" and partition_of(user) in lost_parts and deadlines[user] > killed_ms
    }
    # The survivor fires the victim's timers on its own; then the victim comes back.
    first_orphan = await first_arrival(rx, orphans, timeout=180.0)
    victim.start()
    restarted = time.monotonic()
    await ready(victim)
    done = await wait_delivered(rx, expected, [survivor, victim])
    await asyncio.sleep(3.0)
    tally = Tally.of(rx, expected)
    orphan_arrivals = sorted(r.at for r in rx.requests if r.webhook_id in orphans)
    fired_by_survivor = [t for t in orphan_arrivals if killed < t < restarted]
    report(
        "rebalance",
        {
            "users": USERS,
            "events": len(events),
            **tally.__dict__,
            "victim_partitions": sorted(lost_parts),
            "victim_timers_not_due_at_kill": len(orphans),
            "fired_by_survivor_before_victim_returned": len(fired_by_survivor),
            "takeover_s": round(took_over - killed, 1),
            "kill_to_first_victim_timer_s": (
                round(first_orphan - killed, 1) if first_orphan else None
            ),
            "all_delivered_after_kill_s": round(done - killed, 1) if done else None,
        },
    )
    assert orphans, "no timer of the victim was pending when it died: nothing was tested"
    assert fired_by_survivor, "the survivor fired none of the victim's timers"
    assert tally.lost == 0, f"{tally.line()}\n{survivor.tail()}"
    assert tally.unexpected == 0, tally.line()
    assert unexplained_duplicates(rx, [killed], IN_FLIGHT_WINDOW_S) == [], tally.line()
