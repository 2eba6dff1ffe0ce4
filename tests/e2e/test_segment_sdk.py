"""Segment's own Python SDK pointed at a live worker (issue 2): its calls become events."""

from __future__ import annotations

import asyncio
from pathlib import Path

import msgspec
import pytest

from tests.fixtures.kafka import consume_all

pytestmark = pytest.mark.kafka

LIVE = Path(__file__).parents[1] / "integration" / "pipeline" / "configs" / "live.yaml"


async def test_segment_sdk_track_and_identify_become_events_and_fire_rules(start_worker):
    from segment.analytics import Client

    worker = start_worker(LIVE)
    errors: list[Exception] = []
    client = Client(
        "any-write-key",
        host=worker.url,
        sync_mode=True,
        max_retries=0,
        on_error=lambda exc, _batch: errors.append(exc),
    )

    def calls() -> None:
        client.identify("seg-ana", {"email": "ana@example.com", "name": "Ana"})
        client.track(
            "seg-ana",
            "Product Added",
            {"product_id": "p1", "name": "Trail shoes", "price": 60, "quantity": 1},
        )

    await asyncio.to_thread(calls)
    assert errors == []

    events = [
        msgspec.json.decode(r.value)
        for r in await consume_all(
            worker.broker, f"{worker.prefix}.events", min_count=2, timeout=30
        )
    ]
    assert [(e["user_id"], e["type"]) for e in events] == [
        ("seg-ana", "identify"),
        ("seg-ana", "cart_add"),
    ]
    # The mapped cart_add arms the 3 s inactivity rule, with the identify's traits on it.
    triggers = await consume_all(
        worker.broker, f"{worker.prefix}.triggers", min_count=1, timeout=30
    )
    [trigger] = [msgspec.json.decode(t.value) for t in triggers]
    assert (trigger["rule"], trigger["user_id"]) == ("cart_reminder", "seg-ana")
    assert trigger["fields"]["user_email"] == "ana@example.com"
    assert trigger["fields"]["cart_value"] == 60
