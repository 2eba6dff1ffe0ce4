"""Dedupe memory stays flat (issue 22.3): a deliver worker sends webhooks at a steady rate for
a long time; its `delivered` marks expire after the horizon, so the number of live marks,
the table's size on disk and the worker's RSS level off once the first marks expire.

Opt-in (minutes of load): NUDGEFLOW_SOAK_WEBHOOKS=N sends N webhooks at
NUDGEFLOW_SOAK_WEBHOOK_RATE/s (default 500) with a 30 s horizon; the figures are in
docs/reliability.md ("Bounded dedupe memory"). tests/integration/delivery/
test_dedupe_expiry.py checks the same behaviour in seconds on every run.
"""

from __future__ import annotations

import asyncio
import os
import re
import time
from pathlib import Path
from typing import Any

import msgspec
import pytest
import yaml
from aiohttp import web

from nudgeflow.config.destinations import DeliverySettings
from tests import factories
from tests.faults.conftest import names, ready, report
from tests.fixtures.kafka import Record, produce
from tests.fixtures.metrics import scrape
from tests.fixtures.receivers import Receiver

WEBHOOKS = int(os.environ.get("NUDGEFLOW_SOAK_WEBHOOKS", "0"))
RATE = int(os.environ.get("NUDGEFLOW_SOAK_WEBHOOK_RATE", "500"))
# Triggers are unique; their users repeat (as real traffic does), so the per-user
# timeline the deliver agent also writes stays a fixed size and only `delivered` churns.
USERS = int(os.environ.get("NUDGEFLOW_SOAK_USERS", "1000"))
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
DELIVERY = {
    "retry_schedule": ["1s"],
    "jitter": 0,
    "max_retry_after": "1s",
    "dedupe_margin": "28s",
}
SAMPLE_S = 5.0

pytestmark = [
    pytest.mark.load,
    pytest.mark.kafka,
    pytest.mark.timeout(7200),
    pytest.mark.skipif(
        not WEBHOOKS,
        reason="a soak measurement (minutes of load, sized by NUDGEFLOW_SOAK_WEBHOOKS=N), run "
        "by hand for docs/reliability.md; CI checks expiry in "
        "tests/integration/delivery/test_dedupe_expiry.py",
    ),
]


class CountingReceiver(Receiver):
    """Answers 200 and only counts: a long soak must not keep every request."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    async def _handle(self, request: web.Request) -> web.Response:
        await request.read()
        self.count += 1
        return web.Response(status=200)


def rss_mb(pid: int) -> float:
    match = re.search(r"^VmRSS:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text(), re.M)
    return int(match.group(1)) / 1024 if match else 0.0


def table_mb(data_dir: Path) -> float:
    files = [p for d in data_dir.rglob("delivered-*.db") for p in d.rglob("*") if p.is_file()]
    return sum(p.stat().st_size for p in files) / 2**20


async def feed(bootstrap: str, topic: str, sent: list[int]) -> None:
    """WEBHOOKS triggers at RATE/s, in one batch a second."""
    n = 0
    next_at = time.monotonic()
    while n < WEBHOOKS:
        batch = []
        for _ in range(min(RATE, WEBHOOKS - n)):
            t = factories.trigger(f"soak-{n}", user_id=f"u{n % USERS}", destinations=["hook"])
            batch.append(Record(value=msgspec.json.encode(t), key=t.user_id.encode()))
            n += 1
        await produce(bootstrap, topic, batch)
        sent[0] = n
        next_at += 1.0
        await asyncio.sleep(max(0.0, next_at - time.monotonic()))


async def test_delivered_marks_stay_flat(start_worker: Any, tmp_path: Path) -> None:
    rx = await CountingReceiver().start()
    config = tmp_path / "nudgeflow.yaml"
    dest = {"url": rx.url, "secret": SECRET, "allow_private": True}
    config.write_text(yaml.safe_dump({"destinations": {"hook": dest}, "delivery": DELIVERY}))
    worker = start_worker(config, wait=False, env={"NUDGEFLOW_ROLES": "deliver"}, **names("soak"))
    await ready(worker)
    ttl_s = DeliverySettings(**DELIVERY).mark_ttl_s
    sent = [0]
    samples: list[dict[str, float]] = []
    began = time.monotonic()
    feeding = asyncio.create_task(feed(worker.broker, f"{worker.prefix}.triggers", sent))
    while not feeding.done() or rx.count < WEBHOOKS:
        await asyncio.sleep(SAMPLE_S)
        m = await scrape(worker.url)
        delivered = m.get('nudgeflow_deliveries_total{destination="hook",outcome="delivered"}', 0)
        expired = m.get("nudgeflow_delivered_marks_expired_total", 0)
        assert worker.proc is not None and worker.proc.poll() is None, worker.tail()
        samples.append(
            {
                "t_s": round(time.monotonic() - began, 1),
                "sent": sent[0],
                "received": rx.count,
                "live_marks": delivered - expired,
                "rss_mb": round(rss_mb(worker.proc.pid), 1),
                "table_mb": round(table_mb(worker.data_dir), 1),
            }
        )
        print(samples[-1], flush=True)
    await feeding
    await rx.stop()
    steady = [s for s in samples if s["t_s"] > 2 * ttl_s]
    report(
        "delivered-soak", {"webhooks": WEBHOOKS, "rate": RATE, "ttl_s": ttl_s, "samples": samples}
    )
    assert steady, "run longer than two horizons"
    bound = RATE * (ttl_s + 2 * SAMPLE_S) * 1.2  # one horizon of traffic, plus sampling
    assert max(s["live_marks"] for s in steady) <= bound
    first, last = steady[: len(steady) // 3], steady[-(len(steady) // 3) :]
    assert max(s["rss_mb"] for s in last) <= max(s["rss_mb"] for s in first) * 1.15
