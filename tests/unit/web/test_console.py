"""The console page, its WebSocket, and GET /experiments, over a real aiohttp server.

The analytics service is real but not started (no Kafka): records are handed to
`Analytics.handle` as the consumer would, and the routes read what it folded.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import aiohttp
import msgspec
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from nudgeflow.analytics.service import Analytics
from nudgeflow.config.topics import TopicNames
from nudgeflow.engine.actions import Decision, encode_action
from nudgeflow.web.console import add_console_routes
from nudgeflow.web.experiments import add_experiment_routes
from tests.unit.analytics.test_aggregates import PLAIN, RULE, trigger

TOKEN = "console-token"
TOPICS = TopicNames("t")


def _record(topic: str, value: bytes) -> Any:
    return SimpleNamespace(topic=topic, value=value, headers=())  # as aiokafka hands it over


@pytest.fixture
async def served() -> AsyncIterator[tuple[str, Analytics]]:
    rt = SimpleNamespace(config=SimpleNamespace(rules=(RULE, PLAIN)), topics=TOPICS)
    analytics = Analytics(rt)  # type: ignore[arg-type]
    app = web.Application()
    add_experiment_routes(app, analytics, TOKEN)
    add_console_routes(app, analytics, TOKEN)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    yield str(server.make_url("")).rstrip("/"), analytics
    await server.close()


async def test_page_and_assets_are_served_without_a_token(served: tuple[str, Analytics]) -> None:
    url, _ = served
    async with aiohttp.ClientSession() as s:
        async with s.get(url + "/") as resp:
            assert resp.status == 200
            html = await resp.text()
        assert '<script src="/static/console.js">' in html
        for asset in ("/static/console.js", "/static/console.css"):
            async with s.get(url + asset) as resp:
                assert resp.status == 200, asset
        async with s.get(url + "/console/stats") as resp:
            assert resp.status == 401


async def test_websocket_sends_a_snapshot_then_live_items(served: tuple[str, Analytics]) -> None:
    url, analytics = served
    analytics.handle(_record(TOPICS.triggers, encode_action(trigger("t1", "a"))))
    analytics.handle(_record(TOPICS.events_dlq, b"garbage"))
    analytics.handle(_record(TOPICS.decisions, b"{not json"))  # skipped, not fatal
    async with aiohttp.ClientSession() as s:
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await s.ws_connect(url + "/ws/console")  # no token
        assert refused.value.status == 401
    async with (
        aiohttp.ClientSession() as s,
        s.ws_connect(f"{url}/ws/console?access_token={TOKEN}") as ws,
    ):
        snapshot = await ws.receive_json(timeout=5)
        assert snapshot["type"] == "snapshot"
        assert [i["trigger_id"] for i in snapshot["feed"]] == ["t1"]
        assert snapshot["stats"]["dead_letters"] == {"events.dlq": 1, "triggers.dlq": 0}
        decision = Decision(
            user_id="bob", rule="ping", outcome="fired", at="2024-05-01T12:00:00.000Z"
        )
        analytics.handle(_record(TOPICS.decisions, encode_action(decision)))
        while (msg := await ws.receive_json(timeout=5))["type"] != "feed":
            pass
        assert msg["item"]["kind"] == "decision"
        assert (msg["item"]["user_id"], msg["item"]["outcome"]) == ("bob", "fired")
    assert analytics.skipped == 1


async def test_experiment_results_route(served: tuple[str, Analytics]) -> None:
    url, analytics = served
    for i in range(4):
        analytics.handle(_record(TOPICS.triggers, encode_action(trigger(f"a{i}", "a"))))
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with aiohttp.ClientSession(headers=headers) as s:
        async with s.get(url + "/experiments/cart") as resp:
            assert resp.status == 200
            body = msgspec.json.decode(await resp.read())
        async with s.get(url + "/experiments/ping") as resp:
            assert resp.status == 404
        async with s.get(url + "/experiments") as resp:
            listing = await resp.json()
    a = next(v for v in body["variants"] if v["variant"] == "a")
    assert (a["exposures"], a["sent"], a["converted"]) == (4, 4, 0)
    assert body["allocation"] == "bandit" and body["bandit"]["a"]["beta"] == 5.0
    assert [e["rule"] for e in listing["experiments"]] == ["cart"]


async def test_stats_carry_a_funnel_per_rule_and_step_and_the_page_draws_it(
    served: tuple[str, Analytics],
) -> None:
    url, analytics = served
    at = "2024-05-01T12:00:00.000Z"
    sent = Decision(user_id="ana", rule="ping", outcome="fired", at=at, detail={"step": 0})
    capped = Decision(
        user_id="bob", rule="ping", outcome="suppressed", reason="cap", at=at, detail={"step": 0}
    )
    for d in (sent, capped):
        # A send made on arrival is also the run's entry at that step (engine/decisions.py).
        d.detail = {**d.detail, "entered": True}
        analytics.handle(_record(TOPICS.decisions, encode_action(d)))
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with aiohttp.ClientSession(headers=headers) as s:
        async with s.get(url + "/console/stats") as resp:
            stats = await resp.json()
        async with s.get(url + "/") as resp:
            html = await resp.text()
        async with s.get(url + "/static/console.js") as resp:
            script = await resp.text()
    counted = ("step", "kind", "entered", "sent", "suppressed", "exited", "converted")
    shown = {
        f["rule"]: (f["journey"], [{k: step[k] for k in counted} for step in f["steps"]])
        for f in stats["funnels"]
    }
    empty = {"entered": 0, "sent": 0, "suppressed": {}, "exited": {}, "converted": 0}
    assert list(shown) == ["cart", "ping"]  # every configured rule, in config order
    assert shown["cart"] == (False, [{"step": 0, "kind": "send", **empty}])
    ping = {**empty, "entered": 2, "sent": 1, "suppressed": {"cap": 1}}
    assert shown["ping"] == (False, [{"step": 0, "kind": "send", **ping}])
    assert '<div id="funnels">' in html
    assert "renderFunnels(stats.funnels)" in script and 'class: "funnel"' in script
