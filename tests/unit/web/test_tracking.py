"""GET /r/<token> and /o/<token>.gif (web/tracking.py) on a real aiohttp server."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from nudgeflow.engine.links import CLICK, OPEN, Link, LinkSigner
from nudgeflow.events.parse import EventLimits
from nudgeflow.observability.clock import now_ms
from nudgeflow.web.errors import json_errors
from nudgeflow.web.tracking import PIXEL, add_tracking_routes
from tests.unit.web.conftest import RecordingSink

SIGNER = LinkSigner(b"web-link-secret", "http://127.0.0.1", 86_400_000)


def link(
    url: str = "https://shop.example/cart?id=7", *, kind: str = CLICK, ttl: int = 60_000
) -> Link:
    return Link(kind, "trg_1", "ana", "cart", "reminder", "fast", url, now_ms() + ttl)


@pytest.fixture
async def tracked() -> AsyncIterator[tuple[str, RecordingSink]]:
    sink = RecordingSink()
    app = web.Application(middlewares=[json_errors])
    add_tracking_routes(app, SIGNER, sink, EventLimits())
    server = TestServer(app)
    await server.start_server()
    yield str(server.make_url("")).rstrip("/"), sink
    await server.close()


async def get(url: str) -> tuple[int, dict[str, str], bytes]:
    async with aiohttp.ClientSession() as s, s.get(url, allow_redirects=False) as resp:
        return resp.status, dict(resp.headers), await resp.read()


async def test_a_click_records_the_event_and_redirects(tracked: tuple[str, RecordingSink]) -> None:
    base, sink = tracked
    status, headers, _ = await get(f"{base}/r/{SIGNER.token(link())}")
    assert (status, headers["Location"]) == (302, "https://shop.example/cart?id=7")
    assert "no-store" in headers["Cache-Control"]
    [event] = sink.events
    assert (event.user_id, event.type) == ("ana", "message_clicked")
    assert event.properties == {
        "trigger_id": "trg_1", "rule": "cart", "step": "reminder", "variant": "fast",
        "url": "https://shop.example/cart?id=7",
    }  # fmt: skip
    await get(f"{base}/r/{SIGNER.token(link())}")
    assert sink.events[1].event_id == event.event_id  # a second click: the same event id


async def test_the_pixel_records_an_open(tracked: tuple[str, RecordingSink]) -> None:
    base, sink = tracked
    status, headers, body = await get(f"{base}/o/{SIGNER.token(link('', kind=OPEN))}.gif")
    assert (status, headers["Content-Type"], body) == (200, "image/gif", PIXEL)
    [event] = sink.events
    assert event.type == "message_opened" and event.properties["trigger_id"] == "trg_1"
    assert "url" not in event.properties


async def test_bad_tokens_get_4xx_and_no_redirect(tracked: tuple[str, RecordingSink]) -> None:
    base, sink = tracked
    good = SIGNER.token(link("https://evil.example/"))
    forged = LinkSigner(b"attacker", "http://x", 1).token(link("https://evil.example/"))
    for path, want in [
        (f"/r/{forged}", 400),
        (f"/r/{good[:-3]}", 400),
        (f"/r/{good.split('.')[0]}", 400),
        ("/r/https:%2F%2Fevil.example", 400),
        ("/r/%14%C3%B6%F3%8B%A8%B2.%C2%B3", 400),
        (f"/r/{SIGNER.token(link(ttl=-1))}", 410),
        (f"/o/{good}.gif", 400),  # a click token is no pixel
        (f"/r/{SIGNER.token(link('', kind=OPEN))}", 400),
    ]:
        status, headers, body = await get(base + path)
        assert status == want, (path, body)
        assert "Location" not in headers and b"evil" not in body
    assert sink.events == []


async def test_kafka_down_still_redirects(tracked: tuple[str, RecordingSink]) -> None:
    base, sink = tracked
    sink.available = False
    status, headers, _ = await get(f"{base}/r/{SIGNER.token(link())}")
    assert (status, headers["Location"]) == (302, "https://shop.example/cart?id=7")
