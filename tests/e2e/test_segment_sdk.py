"""Segment's own Python SDK pointed at a live worker (issue 2): its calls become events."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import pytest

from tests.fixtures.kafka import consume_all

pytestmark = pytest.mark.kafka

LIVE = Path(__file__).parents[1] / "integration" / "pipeline" / "configs" / "live.yaml"


def _sdk_client(url: str, errors: list[Exception]) -> Any:
    """Segment's client, synchronous and without retries, its errors kept in `errors`."""
    from segment.analytics import Client

    return Client(
        "any-write-key",
        host=url,
        sync_mode=True,
        max_retries=0,
        on_error=lambda exc, _batch: errors.append(exc),
    )


async def test_segment_sdk_track_and_identify_become_events_and_fire_rules(start_worker):
    worker = start_worker(LIVE)
    errors: list[Exception] = []
    client = _sdk_client(worker.url, errors)

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


async def test_segment_sdk_identify_and_alias_merge_the_guests_into_the_account(
    start_worker,
) -> None:
    """Issue 19.2: two guests' carts (one identified, one aliased) become the account's,
    and its one reminder carries both carts and the identify's email."""
    worker = start_worker(LIVE)
    errors: list[Exception] = []
    client = _sdk_client(worker.url, errors)

    def calls() -> None:
        for guest, sku, price in (("seg-phone", "p1", 80), ("seg-tablet", "p2", 20)):
            client.track(
                anonymous_id=guest,
                event="Product Added",
                properties={"product_id": sku, "price": price, "quantity": 1},
            )
        client.identify("seg-kim", {"email": "kim@example.com"}, anonymous_id="seg-phone")
        client.alias("seg-tablet", "seg-kim")

    await asyncio.to_thread(calls)
    assert errors == []

    events = [
        msgspec.json.decode(r.value)
        for r in await consume_all(
            worker.broker, f"{worker.prefix}.events", min_count=5, timeout=30
        )
    ]
    merges = {
        (e["user_id"], e["properties"]["known_id"]) for e in events if e["type"] == "identify_merge"
    }
    assert merges == {("seg-phone", "seg-kim"), ("seg-tablet", "seg-kim")}
    # Both guests end as pointers: from then on they cannot fire (a trigger sent before
    # that would already be in the topic, ahead of the pointer's write).
    for guest in ("seg-phone", "seg-tablet"):
        await _wait_merged(worker.url, guest, "seg-kim")
    triggers = await consume_all(
        worker.broker, f"{worker.prefix}.triggers", min_count=1, timeout=30
    )
    [trigger] = [msgspec.json.decode(t.value) for t in triggers]
    assert (trigger["rule"], trigger["user_id"]) == ("cart_reminder", "seg-kim")
    assert trigger["fields"]["user_email"] == "kim@example.com"
    assert trigger["fields"]["cart_value"] == 100  # both guests' carts


async def _wait_merged(url: str, user: str, into: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    body: dict = {}
    while time.monotonic() < deadline:
        async with aiohttp.ClientSession() as s, s.get(f"{url}/users/{user}") as resp:
            body = await resp.json() if resp.status == 200 else {}
        if body.get("merged_into") == into:
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"{user} not merged into {into}: {body}")
