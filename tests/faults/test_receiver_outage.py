"""Receiver outage (issue 7.4): one webhook receiver is down under load; nothing lost or
doubled, and a second, healthy destination keeps getting its deliveries meanwhile.

Every rule goes to both destinations. Events flow in a wave a second before,
during and after the outage; the retry schedule is short (1s, 2s, 5s, 10s, 20s,
30s) so the retries outlast the outage without waiting hours.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from tests.faults.conftest import (
    SLOW,
    Tally,
    Workload,
    expected_triggers,
    fault_config,
    names,
    produce_events,
    ready,
    report,
    wait_delivered,
)
from tests.fixtures.kafka import consume_all
from tests.fixtures.receivers import ReceiverFactory

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(1200 if SLOW else 600)]

OUTAGE_S = 60.0 if SLOW else 30.0
USERS_PER_WAVE = 20 if SLOW else 10
LEAD_S = 5  # waves before the outage, and again after it
# 68 s of retries (minus 20 % jitter: 54 s) outlast a 30 s outage; the 60 s one needs
# one more tier, or a trigger first tried as the receiver went down would run out.
SCHEDULE = ("1s", "2s", "5s", "10s", "20s", "30s", *(("60s",) if SLOW else ()))


async def test_receiver_down_under_load(
    start_worker, receiver_factory: ReceiverFactory, tmp_path: Path
) -> None:
    down = await receiver_factory()
    healthy = await receiver_factory()
    config = fault_config(
        tmp_path / "nudgeflow.yaml",
        {"flaky": down.url, "healthy": healthy.url},
        retry_schedule=SCHEDULE,
    )
    worker = start_worker(config, wait=False, **names("receiver"))
    await ready(worker)
    load = Workload()
    waves = int(LEAD_S + OUTAGE_S + LEAD_S)
    window: dict[str, float] = {}

    async def feed() -> None:
        for w in range(waves):
            users = range(w * USERS_PER_WAVE, (w + 1) * USERS_PER_WAVE)
            batch = load.wave(users, lambda n: ("arm", "ping") if n % 2 else ("arm",))
            await produce_events(worker.broker, f"{worker.prefix}.events", batch)
            await asyncio.sleep(1.0)

    async def outage() -> None:
        await asyncio.sleep(LEAD_S)
        await down.stop()
        window["down"] = time.monotonic()
        await asyncio.sleep(OUTAGE_S)
        await down.start()
        window["up"] = time.monotonic()

    began = time.monotonic()
    await asyncio.gather(feed(), outage())
    expected = expected_triggers(config, load.events, tmp_path / "backtest")
    healthy_done = await wait_delivered(healthy, expected, [worker])
    down_done = await wait_delivered(down, expected, [worker])
    await asyncio.sleep(3.0)  # a late retry would show up now
    tally_down, tally_healthy = Tally.of(down, expected), Tally.of(healthy, expected)
    dlq = await consume_all(worker.broker, f"{worker.prefix}.triggers.dlq", timeout=5)
    during = [r for r in healthy.requests if window["down"] <= r.at < window["up"]]
    before = [r for r in healthy.requests if r.at < window["down"]]
    report(
        "receiver-outage",
        {
            "outage_s": OUTAGE_S,
            "users": waves * USERS_PER_WAVE,
            "events": len(load.events),
            **{f"down_{k}": v for k, v in tally_down.__dict__.items()},
            **{f"healthy_{k}": v for k, v in tally_healthy.__dict__.items()},
            "healthy_per_s_before": round(len(before) / LEAD_S, 1),
            "healthy_per_s_during": round(len(during) / OUTAGE_S, 1),
            "dead_letters": len(dlq),
            "receiver_up_to_all_delivered_s": (
                round(down_done - window["up"], 1) if down_done else None
            ),
            "healthy_all_delivered_after_s": (
                round(healthy_done - began, 1) if healthy_done else None
            ),
        },
    )
    for tally in (tally_down, tally_healthy):
        assert (tally.lost, tally.duplicates, tally.unexpected) == (0, 0, 0), tally.line()
    assert dlq == []
    # The healthy destination did not wait for the dead one.
    assert during, "the healthy destination got nothing while the other was down"
