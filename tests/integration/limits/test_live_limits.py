"""Frequency caps and quiet hours live (issue 5): webhooks to a real receiver.

* a user past the global cap gets no webhook, and the decision says why;
* a trigger inside the user's quiet hours is deferred and delivered when the
  window opens.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgspec
import pytest

from tests.fixtures.kafka import consume_all

pytestmark = pytest.mark.kafka

SECRET = "whsec_" + "bGl2ZS1saW1pdHMtdGVzdC1zZWNyZXQ="


def _config(tmp_path: Path, receiver_url: str, limits: str) -> Path:
    path = tmp_path / "nudgeflow.yaml"
    path.write_text(
        f"""
limits:
{limits}
destinations:
  hook: {{url: "{receiver_url}", secret: "{SECRET}", allow_private: true, timeout: 5}}
rules:
  - name: nudge
    trigger: ping
    destinations: [hook]
"""
    )
    return path


def _ping(user: str, **traits: str) -> dict:
    return {
        "event_id": uuid.uuid4().hex,
        "user_id": user,
        "type": "ping",
        "ts": int(time.time() * 1000),
        "traits": traits,
    }


async def test_a_user_past_the_global_cap_gets_no_webhook_and_the_decision_says_why(
    start_worker, receiver, tmp_path
):
    config = _config(tmp_path, receiver.url, "  max_per_user: {count: 2, per: 1h}")
    worker = start_worker(config)
    for _ in range(3):  # one at a time: three separate arming events
        assert (await worker.post_events([_ping("capped")]))[0] == 202
    assert (await worker.post_events([_ping("other")]))[0] == 202

    received = await receiver.wait_for(3, timeout=60)
    await asyncio.sleep(3)  # nothing more may arrive
    users = sorted(msgspec.json.decode(r.body)["user_id"] for r in receiver.requests)
    assert users == ["capped", "capped", "other"]

    decisions = [
        msgspec.json.decode(r.value)
        for r in await consume_all(
            worker.broker, f"{worker.prefix}.decisions", min_count=4, timeout=30
        )
    ]
    capped = [(d["outcome"], d.get("reason")) for d in decisions if d["user_id"] == "capped"]
    assert capped.count(("fired", None)) == 2
    assert ("suppressed", "cap") in capped
    assert len(received) == 3


async def test_a_trigger_in_quiet_hours_is_delivered_when_the_window_opens(
    start_worker, receiver, tmp_path
):
    # Quiet from the current minute to the next one, in the user's own zone (UTC+09:00):
    # the trigger fires inside the window and must wait for its end.
    zone = "Asia/Tokyo"
    now = datetime.now(UTC)
    if now.second >= 50:  # too close to the minute boundary to be sure we are inside
        await asyncio.sleep(61 - now.second)
        now = datetime.now(UTC)
    local = now + timedelta(hours=9)
    start, end = local.strftime("%H:%M"), (local + timedelta(minutes=1)).strftime("%H:%M")
    opens_at = (now + timedelta(minutes=1)).replace(second=0, microsecond=0)
    config = _config(
        tmp_path,
        receiver.url,
        f'  quiet_hours: {{start: "{start}", end: "{end}", action: defer}}',
    )
    worker = start_worker(config)
    assert (await worker.post_events([_ping("sleepy", timezone=zone)]))[0] == 202

    [delivery] = await receiver.wait_for(1, timeout=150)
    arrived = datetime.now(UTC)
    assert arrived >= opens_at  # not before the window opened ...
    assert msgspec.json.decode(delivery.body)["user_id"] == "sleepy"
    decisions = [
        msgspec.json.decode(r.value)
        for r in await consume_all(
            worker.broker, f"{worker.prefix}.decisions", min_count=2, timeout=30
        )
    ]
    outcomes = [d["outcome"] for d in decisions if d["user_id"] == "sleepy"]
    assert "deferred" in outcomes and outcomes[-1] == "fired"  # ... and said why it waited
