"""The rule engine live against the real broker (issue 3): timers fire on the wall clock."""

from __future__ import annotations

import time
import uuid

import msgspec
import pytest

from tests.fixtures.kafka import consume_all

pytestmark = pytest.mark.kafka


def _event(user: str, type_: str, ts_ms: int, **props: object) -> dict:
    return {
        "event_id": uuid.uuid4().hex,
        "user_id": user,
        "type": type_,
        "ts": ts_ms,
        "properties": props,
    }


async def test_inactivity_fires_once_after_deadline_and_purchase_cancels(
    start_worker, live_config, evaluate_only
):
    worker = start_worker(live_config)
    now = int(time.time() * 1000)
    status, body = await worker.post_events(
        [
            _event("ana", "cart_add", now, product_id="p1", price=60.0),
            _event("bob", "cart_add", now, product_id="p2", price=70.0),
            _event("bob", "purchase", now + 1000),
        ]
    )
    assert (status, body) == (202, {"accepted": 3})

    records = await consume_all(worker.broker, f"{worker.prefix}.triggers", min_count=1, timeout=15)
    triggers = [msgspec.json.decode(r.value) for r in records]
    assert [(t["rule"], t["user_id"]) for t in triggers] == [("cart_reminder", "ana")]
    # The worker's own clock: it fired within 2 s after the deadline, not before it.
    assert 0.0 <= triggers[0]["lateness_s"] < 2.0

    # Nothing else arrives later: bob purchased before his deadline.
    later = await consume_all(worker.broker, f"{worker.prefix}.triggers", min_count=2, timeout=5)
    assert [msgspec.json.decode(r.value)["user_id"] for r in later] == ["ana"]
