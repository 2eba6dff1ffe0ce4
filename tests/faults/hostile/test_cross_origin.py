"""Cross-origin pages in real Chromium (issue 21 item 6, issue 19 item 7).

Found: with no token (the default of `nudgeflow dev`), a page on another origin could
`fetch` text/plain events into `/events`, open `/ws/events`, and read the live feed on
`/ws/console`. Now a browser request is refused unless its Origin is the worker's own
or in `allowed_origins`; a page on an allowed origin gets CORS (preflight answered,
the JSON response readable) on `POST /events` and `/v1/*`.

Two pages are served on loopback ports other than the worker's (so other origins):
a foreign one, and a partner on the origin the pair of workers allows.
"""

from __future__ import annotations

import json
import shutil
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from playwright.async_api import Browser, async_playwright

from tests.faults.hostile.conftest import ALLOWED_PORT, Pair
from tests.fixtures.kafka import consume_all
from tests.fixtures.workers import free_port

pytestmark = pytest.mark.kafka

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
]

# Every attempt reports into `results`; `done` once all have settled.
ATTACK = """
<!doctype html><script>
const W = WORKER, results = {};
const event = EVENT;
const settle = (name, p) => p.then(v => results[name] = v, e => results[name] = 'error: ' + e);
const ws = (path, send) => new Promise(resolve => {
  const s = new WebSocket(W.replace('http', 'ws') + path);
  let got = [];
  s.onopen = () => { got.push('open'); if (send) s.send(JSON.stringify(send)); };
  s.onmessage = m => { got.push(JSON.parse(m.data).type || 'ack'); s.close(); };
  s.onerror = () => got.push('error');
  s.onclose = () => resolve(got.join(','));
  setTimeout(() => { try { s.close(); } catch (e) {} resolve(got.join(',')); }, 5000);
});
Promise.all([
  settle('no_cors_text', fetch(W + '/events', {method: 'POST', mode: 'no-cors',
    headers: {'Content-Type': 'text/plain'}, body: JSON.stringify(event.text)})
    .then(r => r.type)),
  settle('cors_json', fetch(W + '/events', {method: 'POST',
    headers: {'Content-Type': 'application/json'}, body: JSON.stringify(event.json)})
    .then(async r => r.status + ' ' + (await r.text()))),
  settle('cors_text', fetch(W + '/events', {method: 'POST',
    headers: {'Content-Type': 'text/plain'}, body: JSON.stringify(event.plain)})
    .then(async r => r.status + ' ' + (await r.text()))),
  settle('segment_text', fetch(W + '/v1/track', {method: 'POST',
    headers: {'Content-Type': 'text/plain'}, body: JSON.stringify(event.segment)})
    .then(async r => r.status + ' ' + (await r.text()))),
  settle('ws_events', ws('/ws/events', event.ws)),
  settle('ws_console', ws('/ws/console', null)),
]).then(() => { window.results = results; window.done = true; });
</script>
"""


async def _page_server(port: int, html: str) -> web.AppRunner:
    async def page(request: web.Request) -> web.Response:
        return web.Response(text=html, content_type="text/html")

    app = web.Application()
    app.router.add_get("/", page)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    assert path, "Debian's chromium is required (make install adds it)"
    async with async_playwright() as pw:
        launched = await pw.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
        yield launched
        await launched.close()


def _events(tag: str) -> dict[str, Any]:
    now = int(time.time() * 1000)

    def one(kind: str) -> dict[str, Any]:
        return {"user_id": f"{kind}-{tag}", "event_id": f"{kind}-{tag}", "type": "ping", "ts": now}

    return {
        "text": one("text"),
        "json": one("json"),
        "plain": one("plain"),
        "ws": one("ws"),
        "segment": {"userId": f"segment-{tag}", "event": "Signed Up", "messageId": f"seg-{tag}"},
    }


async def _visit(browser: Browser, pair: Pair, port: int) -> tuple[dict[str, str], set[str]]:
    """Open the page on `port` aimed at worker a; (what the page saw, ids in the topic)."""
    tag = uuid.uuid4().hex[:8]
    html = ATTACK.replace("WORKER", json.dumps(pair.a.url)).replace(
        "EVENT", json.dumps(_events(tag))
    )
    runner = await _page_server(port, html)
    try:
        page = await browser.new_page()
        await page.goto(f"http://127.0.0.1:{port}/")
        await page.wait_for_function("window.done === true", timeout=30_000)
        results = await page.evaluate("window.results")
        await page.close()
    finally:
        await runner.cleanup()
    stored = await consume_all(pair.broker, f"{pair.prefix}.events", timeout=10)
    ids = {str(json.loads(r.value or b"{}").get("user_id")) for r in stored}
    ids |= {str(json.loads(r.value or b"{}").get("userId")) for r in stored}
    return results, {i.split("-", 1)[0] for i in ids if i.endswith(tag)}


async def test_a_foreign_page_can_neither_write_nor_read(browser: Browser, pair: Pair) -> None:
    results, stored = await _visit(browser, pair, free_port())
    print(f"\n[cross-origin] foreign page: {results}; stored: {sorted(stored)}")
    assert stored == set(), (results, stored)  # not one event reached Kafka
    assert "open" not in results["ws_events"] and "ack" not in results["ws_events"], results
    assert "snapshot" not in results["ws_console"], results
    for name in ("cors_json", "cors_text", "segment_text"):
        assert results[name].startswith("error"), results  # no CORS: the page reads nothing


async def test_an_allowed_page_gets_cors_and_json_only(browser: Browser, pair: Pair) -> None:
    results, stored = await _visit(browser, pair, ALLOWED_PORT)
    print(f"\n[cross-origin] allowed page: {results}; stored: {sorted(stored)}")
    assert results["cors_json"].startswith("202 "), results  # preflighted, response readable
    assert results["cors_text"].startswith("415 "), results  # text/plain: not on /events
    assert results["segment_text"].startswith("202 "), results  # analytics.js sends text/plain
    assert results["ws_events"] == "open,ack", results
    assert stored == {"json", "segment", "ws"}, (results, stored)
