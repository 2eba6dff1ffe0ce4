"""`nudgeflow dev`'s demo: its story runs cart_recovery in the dev config's seconds.

The story and the demo receiver's click are fed to the engine built from the dev
config (as the dev worker builds it), one user at a time, with timers fired when due:
what the demo receiver then prints is what this asserts.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from nudgeflow.cli.demo import click_for, story
from nudgeflow.cli.receiver import build_app
from nudgeflow.config.build import build_engine
from nudgeflow.config.loader import DEV_CONFIG, load_config
from nudgeflow.engine.actions import Trigger
from nudgeflow.events.parse import parse_event
from tests.unit.engine.helpers import T0, Run, S

CYCLE = 3


def _sends(user: str, click_after_ms: int | None = None) -> list[tuple[int | str, int]]:
    """(step, seconds after the cart) of each cart_recovery send to `user`_3."""
    engine = build_engine(load_config(DEV_CONFIG, env={}), secret=b"dev")
    run = Run(engine)
    run.send(*(parse_event(e, now_ms=None) for e in story(CYCLE, T0) if e["user_id"] == user))
    clicked = False
    for now in range(T0, T0 + 120 * S, S):  # the worker's timer loop, a tick a second
        run.tick(now)
        if click_after_ms is None or clicked:
            continue
        for t in run.triggers("cart_recovery"):
            click = click_for(_payload(t), now + click_after_ms)
            if click is not None:
                run.send(parse_event(click, now_ms=None))
                clicked = True
    return [(t.step, (ms(t.deadline) - T0) // S) for t in run.triggers("cart_recovery")]


def ms(iso: str) -> int:
    return int(datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() * 1000)


def _payload(t: Trigger) -> dict[str, Any]:
    return {"rule": t.rule, "user_id": t.user_id, "step": t.step, "trigger_id": t.trigger_id}


def test_ana_gets_the_three_messages_in_dev_seconds() -> None:
    # 30 s idle -> reminder; no click within 40 s -> the second ($120 > $100); 20 s later
    # the last, at her best hour within a minute: she has no activity yet, so at once.
    assert _sends("ana_3") == [(1, 30), (3, 70), (5, 90)]


def test_fay_clicks_the_reminder_and_gets_the_last_call() -> None:
    # 30 s idle -> reminder; the click a second later -> `clicked`: 20 s, no purchase ->
    # last_call. Never the second message (and $80 would skip it anyway).
    assert _sends("fay_3", click_after_ms=1 * S) == [(1, 30), ("last_call", 51)]


def test_only_fays_reminder_is_clicked() -> None:
    base = {"rule": "cart_recovery", "user_id": "fay_1", "step": 1, "trigger_id": "trg_1"}
    click = click_for(base, T0)
    assert click is not None
    assert (click["user_id"], click["type"], click["properties"]["trigger_id"]) == (
        "fay_1",
        "message_clicked",
        "trg_1",
    )
    assert click_for({**base, "user_id": "ana_1"}, T0) is None
    assert click_for({**base, "step": 5}, T0) is None
    assert click_for({**base, "rule": "abandoned_cart"}, T0) is None


async def test_the_receiver_hands_each_new_delivery_on_once(
    capsys: pytest.CaptureFixture[str],
) -> None:
    seen: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    async def on_delivery(payload: dict[str, Any]) -> None:
        seen.put_nowait(payload)

    server = TestServer(build_app(None, on_delivery), host="127.0.0.1")
    await server.start_server()
    body = {"rule": "cart_recovery", "step": "last_call", "user_id": "fay_1", "message": "hi"}
    try:
        async with aiohttp.ClientSession() as s:
            for _ in range(2):  # the second is a retry: same webhook-id
                url = str(server.make_url("/webhooks/demo"))
                async with s.post(url, json=body, headers={"webhook-id": "trg_9"}) as resp:
                    assert resp.status == 200
        assert await asyncio.wait_for(seen.get(), timeout=5) == body  # after the answer
    finally:
        await server.close()
    assert seen.empty()  # the retry was not handed on again
    assert "trg_9 rule=cart_recovery step=last_call user=fay_1" in capsys.readouterr().out
