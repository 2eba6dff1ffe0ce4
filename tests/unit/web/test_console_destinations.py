"""The console's destinations section (issue 22.1): each destination's circuit state,
failure ratio and waiting count, from the worker's metrics, over a real aiohttp server."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from types import SimpleNamespace

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from nudgeflow.analytics.service import Analytics
from nudgeflow.config.topics import TopicNames
from nudgeflow.observability import metrics
from nudgeflow.web.console import add_console_routes

TOKEN = "console-token"


@pytest.fixture
def breakers() -> Iterator[None]:
    """Three destinations as a deliver agent would publish them."""
    metrics.circuit_state.labels(destination="dst-closed").set(0)
    metrics.circuit_state.labels(destination="dst-open").set(2)
    metrics.circuit_state.labels(destination="dst-probing").set(1)
    metrics.circuit_failure_ratio.bind(
        lambda: iter([(("dst-closed",), 0.0), (("dst-open",), 0.75), (("dst-probing",), 1.0)])
    )
    metrics.delivery_waiting.bind(lambda: iter([(("dst-open",), 12.0), (("dst-probing",), 3.0)]))
    yield
    metrics.circuit_failure_ratio.bind(None)
    metrics.delivery_waiting.bind(None)
    for name in ("dst-closed", "dst-open", "dst-probing"):
        metrics.circuit_state.remove(name)


@pytest.fixture
async def url() -> AsyncIterator[str]:
    rt = SimpleNamespace(config=SimpleNamespace(rules=()), topics=TopicNames("t"))
    app = web.Application()
    add_console_routes(app, Analytics(rt), TOKEN)  # type: ignore[arg-type]
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    yield str(server.make_url("")).rstrip("/")
    await server.close()


async def test_stats_carry_each_destinations_circuit(breakers: None, url: str) -> None:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with aiohttp.ClientSession() as s, s.get(url + "/console/stats", headers=headers) as r:
        assert r.status == 200
        mine = [d for d in (await r.json())["destinations"] if d["destination"].startswith("dst-")]
    assert mine == [
        {"destination": "dst-closed", "state": "closed", "failure_ratio": 0.0, "waiting": 0},
        {"destination": "dst-open", "state": "open", "failure_ratio": 0.75, "waiting": 12},
        {"destination": "dst-probing", "state": "half-open", "failure_ratio": 1.0, "waiting": 3},
    ]


async def test_websocket_snapshot_has_them_and_the_page_draws_them(
    breakers: None, url: str
) -> None:
    async with (
        aiohttp.ClientSession() as s,
        s.ws_connect(f"{url}/ws/console?access_token={TOKEN}") as ws,
    ):
        snapshot = await ws.receive_json(timeout=5)
    states = {d["destination"]: d["state"] for d in snapshot["stats"]["destinations"]}
    assert {k: v for k, v in states.items() if k.startswith("dst-")} == {
        "dst-closed": "closed",
        "dst-open": "open",
        "dst-probing": "half-open",
    }
    async with aiohttp.ClientSession() as s:
        async with s.get(url + "/") as r:
            html = await r.text()
        async with s.get(url + "/static/destinations.js") as r:
            assert r.status == 200
            script = await r.text()
    assert 'id="destinations"' in html
    assert html.index("/static/destinations.js") < html.index("/static/console.js")
    assert "function renderDestinations" in script
