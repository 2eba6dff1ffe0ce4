"""The console's live rules section (issue 20.5): the page has it, rules.js is served and
draws from the routes, and the stats carry each rule's sends by rules version."""

from __future__ import annotations

from collections.abc import AsyncIterator
from types import SimpleNamespace

import aiohttp
import msgspec
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from nudgeflow.analytics.service import Analytics
from nudgeflow.config.topics import TopicNames
from nudgeflow.engine.actions import encode_action
from nudgeflow.web.console import add_console_routes
from tests import factories

TOKEN = "console-token"
TOPICS = TopicNames("t")


@pytest.fixture
async def served() -> AsyncIterator[tuple[str, Analytics]]:
    rt = SimpleNamespace(config=SimpleNamespace(rules=()), topics=TOPICS)
    analytics = Analytics(rt)  # type: ignore[arg-type]
    app = web.Application()
    add_console_routes(app, analytics, TOKEN)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    yield str(server.make_url("")).rstrip("/"), analytics
    await server.close()


def _trigger(tid: str, version: int) -> SimpleNamespace:
    t = factories.trigger(
        tid,
        rule="cart",
        user_id=f"u-{tid}",
        variant="default",
        at="2026-01-01T12:00:00.000Z",
        armed_at="2026-01-01T11:00:00.000Z",
        message="",
        destinations=["hook"],
    )
    t = msgspec.structs.replace(t, rule_version=version)
    return SimpleNamespace(topic=TOPICS.triggers, value=encode_action(t))


async def test_stats_count_sends_by_rules_version(served: tuple[str, Analytics]) -> None:
    url, analytics = served
    for tid, version in [("a", 4), ("b", 4), ("c", 5)]:
        analytics.handle(_trigger(tid, version))
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with aiohttp.ClientSession() as s, s.get(url + "/console/stats", headers=headers) as r:
        assert r.status == 200
        assert (await r.json())["sends_by_version"] == {"cart": {"4": 2, "5": 1}}


async def test_the_page_has_the_section_and_rules_js_is_served(
    served: tuple[str, Analytics],
) -> None:
    url, _ = served
    async with aiohttp.ClientSession() as s:
        async with s.get(url + "/") as r:
            html = await r.text()
        async with s.get(url + "/static/rules.js") as r:
            assert r.status == 200
            script = await r.text()
        async with s.get(url + "/static/console.js") as r:
            console = await r.text()
    for node in ('id="rules"', 'id="rules-live"', 'id="rules-table"', 'id="rules-history"'):
        assert node in html
    assert html.index("/static/rules.js") < html.index("/static/console.js")
    assert "function renderRules" in script and "renderRules(stats.sends_by_version" in console
    for call in ('"/rules/history"', '"/rules"', "/pause", "/resume", "Bearer", '"pre"'):
        assert call in script
