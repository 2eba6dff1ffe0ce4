"""Journeys against the real broker, a real worker and a real webhook receiver.

One worker serves the module (conftest.py); its config is configs/journeys.yaml, in
seconds. Each test asserts what was delivered, to whom, with which step and payload,
at which logical time (the trigger's `deadline`), and what was not.
"""

from __future__ import annotations

import re
import uuid
from datetime import datetime

import pytest

from tests.fixtures.metrics import scrape, wait_for_metric
from tests.fixtures.receivers import Receiver
from tests.fixtures.workers import WorkerProcess
from tests.integration.journeys.conftest import event, get_user, now_ms, payloads, wait_for

pytestmark = pytest.mark.kafka
S = 1000


def ms(iso: str) -> int:
    return int(datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() * 1000)


async def test_a_click_on_the_first_message_takes_the_branch(
    journey_worker: WorkerProcess, hook: Receiver
) -> None:
    clicker, idle = f"click-{uuid.uuid4().hex[:6]}", f"idle-{uuid.uuid4().hex[:6]}"
    t0 = now_ms()
    status, _ = await journey_worker.post_events(
        [event(u, "cart_add", t0, product_id="p1", price=80) for u in (clicker, idle)]
    )
    assert status == 202
    [first] = await wait_for(hook, clicker, 1)
    assert (first["rule"], first["step"], first["message"]) == (
        "cart_flow",
        "reminder",
        f"first for {clicker}",
    )
    assert ms(first["deadline"]) == t0 + 2 * S
    click_at = now_ms()
    click = event(clicker, "message_clicked", click_at, trigger_id=first["trigger_id"])
    assert (await journey_worker.post_events([click]))[0] == 202

    sent_idle = await wait_for(hook, idle, 2)  # the unclicked path: the timeout's message
    assert [(b["step"], b["message"]) for b in sent_idle] == [
        ("reminder", f"first for {idle}"),
        ("nudge", f"second for {idle}"),
    ]
    assert ms(sent_idle[1]["deadline"]) == ms(sent_idle[0]["deadline"]) + 6 * S
    sent_clicker = await wait_for(hook, clicker, 2)
    assert [(b["step"], b["message"]) for b in sent_clicker] == [
        ("reminder", f"first for {clicker}"),
        ("last_call", f"last call for {clicker}"),
    ]  # and never the nudge: its time (the idle user's) has passed
    assert ms(sent_clicker[1]["deadline"]) == click_at + 2 * S
    view = await get_user(journey_worker, clicker)
    assert view["armed"] == []
    outcomes = [
        (d["outcome"], d.get("reason")) for d in view["decisions"] if d["rule"] == "cart_flow"
    ]
    assert ("waited", "message_clicked") in outcomes and ("exited", "completed") in outcomes
    # The funnel metrics, counted live by the worker (labels: rule and step only).
    await wait_for_metric(journey_worker.url, _journey("exited", "last_call"), 1, timeout=10)
    prefix, label = "nudgeflow_journey_", re.compile(r'_total\{rule="cart_flow",step="(.+)"\}$')
    funnel = {
        (name[len(prefix) :].split("_total")[0], m[1]): value
        for name, value in (await scrape(journey_worker.url)).items()
        if name.startswith(prefix) and (m := label.search(name)) and value
    }
    assert funnel == {
        ("entered", "0"): 2,  # both carts
        ("entered", "reminder"): 2,
        ("sent", "reminder"): 2,
        ("entered", "2"): 2,  # the wait for the click
        ("entered", "nudge"): 1,  # the idle user, at the timeout
        ("sent", "nudge"): 1,
        ("entered", "4"): 1,
        ("exited", "4"): 1,  # the exit step after the nudge
        ("entered", "clicked"): 1,  # the clicker
        ("entered", "last_call"): 1,
        ("sent", "last_call"): 1,
        ("exited", "last_call"): 1,  # ran off its last step
    }


def _journey(stage: str, step: str) -> str:
    return f'nudgeflow_journey_{stage}_total{{rule="cart_flow",step="{step}"}}'


async def test_two_orders_get_two_follow_ups(journey_worker: WorkerProcess, hook: Receiver) -> None:
    user = f"buyer-{uuid.uuid4().hex[:6]}"
    t0 = now_ms()
    orders = [
        event(user, "purchase", t0, order_id="o-1"),
        event(user, "purchase", t0 + S, order_id="o-2"),
    ]
    assert (await journey_worker.post_events(orders))[0] == 202
    sent = await wait_for(hook, user, 2)
    assert sorted((b["instance"], b["message"], ms(b["deadline"])) for b in sent) == [
        ("o-1", "How was order o-1?", t0 + 2 * S),
        ("o-2", "How was order o-2?", t0 + 3 * S),
    ]
    assert len({b["trigger_id"] for b in sent}) == 2


async def test_entry_refuses_the_10_dollar_order_and_accepts_the_500_one(
    journey_worker: WorkerProcess, hook: Receiver
) -> None:
    user = f"orders-{uuid.uuid4().hex[:6]}"
    t0 = now_ms()
    small, big = (
        event(user, "order_placed", t0, total=10),
        event(user, "order_placed", t0 + 200, total=500),
    )
    assert (await journey_worker.post_events([small, big]))[0] == 202
    [sent] = await wait_for(hook, user, 1)
    assert (sent["rule"], sent["message"]) == ("big_order", "Thanks for the 500 order")
    assert ms(sent["armed_at"]) == t0 + 200 and ms(sent["deadline"]) == t0 + 1200
    assert len(payloads(hook, user)) == 1  # the $10 order's would have come first
    view = await get_user(journey_worker, user)
    [refused] = [d for d in view["decisions"] if d["outcome"] == "not_entered"]
    assert (refused["reason"], refused["detail"]["expression"]) == (
        "entry",
        "event.properties.total > 100",
    )


async def test_kill_9_between_two_steps_the_second_still_fires_once_at_its_time(
    journey_worker: WorkerProcess, hook: Receiver
) -> None:
    """Last in the module: it kills the shared worker and starts it again."""
    user = f"new-{uuid.uuid4().hex[:6]}"
    t0 = now_ms()
    assert (await journey_worker.post_events([event(user, "signup", t0)]))[0] == 202
    [welcome] = await wait_for(hook, user, 1)
    assert welcome["step"] == "welcome" and ms(welcome["deadline"]) == t0
    journey_worker.kill()
    journey_worker.start()
    journey_worker.wait_ready()
    ready_at = now_ms()
    sent = await wait_for(hook, user, 2, timeout=60)
    follow_ups = [b for b in sent if b["step"] == "follow_up"]
    assert len({b["trigger_id"] for b in follow_ups}) == 1  # once (a retry would share the id)
    [follow_up] = follow_ups[:1]
    assert ms(follow_up["deadline"]) == t0 + 15 * S
    if ready_at < t0 + 15 * S:  # back before it was due: on time, not late
        assert follow_up["late"] is False
    assert {b["step"] for b in sent} == {"welcome", "follow_up"}
    back = (ready_at - t0) / 1000
    print(f"\n[journeys kill -9] back after {back:.1f}s, follow-up late={follow_up['late']}")
