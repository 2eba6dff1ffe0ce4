"""Consent and attribution against the real broker, a real worker and a real receiver
(issue 19.1 and 19.4): an unsubscribed user gets nothing from any marketing rule while a
transactional destination still receives; a conversion's revenue is summed per variant."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import aiohttp
import msgspec
import pytest

from nudgeflow.engine.timefmt import iso_utc
from tests.fixtures.receivers import Receiver
from tests.fixtures.workers import WorkerProcess
from tests.integration.journeys.conftest import event, get_user, now_ms

pytestmark = pytest.mark.kafka


def sent(rx: Receiver, user: str) -> list[tuple[str, str]]:
    """(destination path, rule) of every request for `user`, in arrival order."""
    out = []
    for r in rx.requests:
        body = msgspec.json.decode(r.body)
        if body.get("user_id") == user:
            out.append((r.path.rsplit("/", 1)[-1], body["rule"]))
    return out


async def eventually(check: Any, timeout: float = 20.0) -> Any:
    """Poll `check()` (an awaitable factory) until it returns a truthy value."""
    deadline = time.monotonic() + timeout
    while True:
        got = await check()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"not met within {timeout}s: {got!r}")
        await asyncio.sleep(0.2)


async def admin_get(worker: WorkerProcess, path: str, missing_ok: bool = False) -> Any:
    async with aiohttp.ClientSession() as s, s.get(f"{worker.url}{path}") as resp:
        if missing_ok and resp.status == 404:
            return None
        assert resp.status == 200, await resp.text()
        body: dict[str, Any] = await resp.json()
        return body


async def test_unsubscribed_no_marketing_webhook_transactional_still_sent(
    consent_worker: WorkerProcess, hook: Receiver
) -> None:
    gone, kept = f"gone-{uuid.uuid4().hex[:6]}", f"kept-{uuid.uuid4().hex[:6]}"
    t0 = now_ms()
    events = [event(gone, "unsubscribe", t0)]
    for user in (gone, kept):
        events += [
            event(user, "cart_add", t0 + 1, product_id="p1", price=80),  # promo: marketing
            event(user, "signup", t0 + 2),  # welcome: marketing + receipts
            event(user, "order_placed", t0 + 3),  # receipt: receipts
        ]
    assert (await consent_worker.post_events(events))[0] == 202

    async def both_done() -> bool:
        view = await admin_get(consent_worker, f"/users/{gone}", missing_ok=True)
        if view is None:
            return False  # not applied yet
        suppressed = {d["rule"] for d in view["decisions"] if d.get("reason") == "consent"}
        return suppressed == {"promo"} and len(sent(hook, gone)) >= 2 and len(sent(hook, kept)) >= 4

    await eventually(both_done)
    assert sorted(sent(hook, kept)) == [
        ("marketing", "promo"),
        ("marketing", "welcome"),
        ("receipts", "receipt"),
        ("receipts", "welcome"),
    ]
    assert sorted(sent(hook, gone)) == [("receipts", "receipt"), ("receipts", "welcome")]
    view = await get_user(consent_worker, gone)
    assert view["consent"] == {"subscribed": False, "changed_at": iso_utc(t0), "categories": {}}
    [promo] = [d for d in view["decisions"] if d["rule"] == "promo" and d["outcome"] != "armed"]
    assert (promo["outcome"], promo["reason"]) == ("suppressed", "consent")
    assert sent(hook, gone).count(("marketing", "promo")) == 0  # and never later


async def test_a_conversions_revenue_is_summed_per_variant(
    consent_worker: WorkerProcess, hook: Receiver
) -> None:
    tag = uuid.uuid4().hex[:6]
    users = [f"buyer-{tag}-{i}" for i in range(6)]
    t0 = now_ms()
    status, _ = await consent_worker.post_events([event(u, "offer_viewed", t0) for u in users])
    assert status == 202

    async def variants() -> dict[str, str] | None:
        got = {}
        for r in hook.requests:
            body = msgspec.json.decode(r.body)
            if body.get("user_id") in users and body["rule"] == "offer":
                got[body["user_id"]] = body["variant"]
        return got if len(got) == len(users) else None

    variant_of = await eventually(variants)
    revenue = {u: 10.0 * (i + 1) for i, u in enumerate(users)}  # 10, 20, ... 60
    purchases = [event(u, "purchase", t0 + 1000, revenue=revenue[u]) for u in users]
    purchases.append(event(users[0], "purchase", t0 + 2000, revenue=999))  # not a second time
    assert (await consent_worker.post_events(purchases))[0] == 202
    expected: dict[str, float] = {}
    for u, v in variant_of.items():
        expected[v] = expected.get(v, 0.0) + revenue[u]

    async def converted() -> dict[str, Any] | None:
        body = await admin_get(consent_worker, "/experiments/offer")
        done = sum(v["converted"] for v in body["variants"]) == len(users)
        return body if done else None

    body = await eventually(converted)
    assert {v["variant"]: v["revenue"] for v in body["variants"] if v["converted"]} == expected
    assert body["conversion_event"] == "purchase"
    rule = await admin_get(consent_worker, "/rules/offer")
    attribution = rule["attribution"]
    assert (attribution["converted"], attribution["revenue"]) == (len(users), 210.0)
    assert {v: e["revenue"] for v, e in attribution["variants"].items()} == expected
    assert rule["steps"][0]["revenue"] == 210.0
