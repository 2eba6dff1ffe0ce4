"""Browser origins and CORS on a real aiohttp server (web/origins.py; issue 21.6, 19.7)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from nudgeflow.web.errors import json_errors
from nudgeflow.web.ingest import IngestOptions, add_ingest_routes
from nudgeflow.web.origins import OriginPolicy, origin_guard
from tests.unit.web.conftest import RecordingSink

TOKEN = "t0ken"
PARTNER = "https://shop.example"


def _event() -> dict[str, Any]:
    return {"user_id": "u", "type": "ping", "ts": int(time.time() * 1000)}


@pytest.fixture
async def url() -> AsyncIterator[str]:
    policy = OriginPolicy.of([PARTNER], ["http://worker-1:6066"])
    app = web.Application(middlewares=[origin_guard(policy), json_errors])
    add_ingest_routes(app, RecordingSink(), IngestOptions(api_token=TOKEN))

    async def other(request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    app.router.add_get("/users/{user_id}", other)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    yield str(server.make_url("")).rstrip("/")
    await server.close()


async def _call(method: str, url: str, **kw: Any) -> tuple[int, dict[str, str], str]:
    async with aiohttp.ClientSession() as s, s.request(method, url, **kw) as r:
        return r.status, dict(r.headers), await r.text()


def _preflight(origin: str, method: str = "POST") -> dict[str, str]:
    return {
        "Origin": origin,
        "Access-Control-Request-Method": method,
        "Access-Control-Request-Headers": "authorization, content-type",
    }


async def test_an_allowed_origin_gets_a_preflight_without_the_token(url: str) -> None:
    for path in ("/events", "/v1/track", "/v1/batch"):
        status, headers, _ = await _call("OPTIONS", url + path, headers=_preflight(PARTNER))
        assert status == 204, path
        assert headers["Access-Control-Allow-Origin"] == PARTNER
        assert "POST" in headers["Access-Control-Allow-Methods"]
        assert "Authorization" in headers["Access-Control-Allow-Headers"]
        assert headers["Vary"] == "Origin"


@pytest.mark.parametrize(
    ("origin", "path"),
    [
        ("https://evil.example", "/events"),
        ("null", "/events"),
        ("https://shop.example.evil.example", "/v1/track"),
        (PARTNER, "/users/u"),  # CORS is for ingestion only
    ],
)
async def test_any_other_preflight_is_refused(url: str, origin: str, path: str) -> None:
    status, headers, body = await _call("OPTIONS", url + path, headers=_preflight(origin))
    assert status == 403 and "origin_not_allowed" in body
    assert "Access-Control-Allow-Origin" not in headers


async def test_the_token_is_still_required_and_the_page_can_read_why(url: str) -> None:
    status, headers, body = await _call(
        "POST", url + "/events", json=_event(), headers={"Origin": PARTNER}
    )
    assert status == 401 and headers["Access-Control-Allow-Origin"] == PARTNER, body
    status, headers, _ = await _call(
        "POST",
        url + "/events",
        json=_event(),
        headers={"Origin": PARTNER, "Authorization": f"Bearer {TOKEN}"},
    )
    assert status == 202 and headers["Access-Control-Allow-Origin"] == PARTNER


@pytest.mark.parametrize("origin", ["https://evil.example", "null", "http://localhost.evil"])
async def test_a_foreign_page_is_refused_even_with_the_token(url: str, origin: str) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    for method, path in (("POST", "/events"), ("POST", "/v1/track"), ("GET", "/users/u")):
        status, headers, body = await _call(
            method, url + path, json=_event(), headers={"Origin": origin, **auth}
        )
        assert status == 403 and "origin_not_allowed" in body, (method, path)
        assert "Access-Control-Allow-Origin" not in headers


async def test_the_worker_own_pages_and_non_browsers_are_not_concerned(url: str) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    own = url  # http://127.0.0.1:<port>: an IP literal, as the console is opened
    status, headers, _ = await _call("GET", url + "/users/u", headers={"Origin": own, **auth})
    assert status == 200 and "Access-Control-Allow-Origin" not in headers
    assert (await _call("GET", url + "/users/u", headers=auth))[0] == 200


async def test_a_rebound_name_is_not_the_worker_own(url: str) -> None:
    """DNS rebinding: the page's name resolves to the worker, so Host carries that name."""
    port = url.rsplit(":", 1)[1]
    for name, expected in (("evil.example", 403), ("localhost", 200), ("worker-1", 200)):
        headers = {"Origin": f"http://{name}:{port}", "Host": f"{name}:{port}"}
        assert (await _call("GET", url + "/users/u", headers=headers))[0] == expected, name


async def test_text_plain_is_refused_on_events_and_kept_for_segment(url: str) -> None:
    import json

    auth = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "text/plain"}
    body = json.dumps(_event())
    assert (await _call("POST", url + "/events", data=body, headers=auth))[0] == 415
    segment = json.dumps({"userId": "u", "event": "Signed Up"})
    status, headers, _ = await _call(
        "POST", url + "/v1/track", data=segment, headers={**auth, "Origin": PARTNER}
    )
    assert status == 202 and headers["Access-Control-Allow-Origin"] == PARTNER
