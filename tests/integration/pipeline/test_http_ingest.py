"""HTTP ingestion into the real broker (issue 2): every accepted event is stored, once."""

from __future__ import annotations

import time

import msgspec
import pytest

from tests.fixtures.kafka import consume_all
from tests.fixtures.metrics import scrape, wait_for_metric

pytestmark = pytest.mark.kafka


def _batch(start: int, n: int, now_ms: int) -> list[dict]:
    return [
        {"event_id": f"e{i}", "user_id": f"u{i % 1000}", "type": "ping", "ts": now_ms + i}
        for i in range(start, start + n)
    ]


async def test_10000_events_in_batches_of_500_reach_the_topic_and_apply_once(
    start_worker, live_config, evaluate_only
):
    worker = start_worker(live_config)
    now = int(time.time() * 1000)
    batches = [_batch(i, 500, now) for i in range(0, 10_000, 500)]
    for batch in batches:
        assert await worker.post_events(batch) == (202, {"accepted": 500})

    stored = await consume_all(
        worker.broker, f"{worker.prefix}.events", min_count=10_000, timeout=60
    )
    assert len(stored) == 10_000
    assert {r.key.decode() for r in stored} == {f"u{i}" for i in range(1000)}

    # The same events again (a producer retrying): stored twice, applied once.
    for batch in batches:
        assert await worker.post_events(batch) == (202, {"accepted": 500})
    stored = await consume_all(
        worker.broker, f"{worker.prefix}.events", min_count=20_000, timeout=60
    )
    assert len(stored) == 20_000

    # Wait until the worker has seen all 20,000 records, then look at what it did.
    await wait_for_metric(worker.url, "nudgeflow_events_duplicate_total", 10_000)
    seen = await scrape(worker.url)
    assert seen["nudgeflow_events_applied_total"] == 10_000
    assert seen["nudgeflow_events_duplicate_total"] == 10_000

    # `ping` fires at once on every applied event: exactly one trigger per distinct event.
    triggers = await consume_all(
        worker.broker, f"{worker.prefix}.triggers", min_count=10_000, timeout=60
    )
    ids = [msgspec.json.decode(r.value)["trigger_id"] for r in triggers]
    assert len(ids) == 10_000
    assert len(set(ids)) == 10_000
