"""The web console at `/`: static HTML/JS/CSS plus a WebSocket of live data.

No build toolchain and nothing from a CDN: the page is three static files in
`static/`, and the chart is plain SVG drawn by the page's script. The page
itself holds no data, so it is served without a token; the data routes
(`/ws/console`, `/console/stats`, `/experiments`) are admin routes. A browser
cannot set headers on a WebSocket, so the token may come as `?access_token=`.

WebSocket messages (JSON): `{"type": "snapshot", "feed": [...], "stats": {...}}`
once, then `{"type": "feed", "item": {...}}` per trigger or decision and
`{"type": "stats", "stats": {...}}` every STATS_EVERY_S.

`stats.destinations` is each webhook destination's circuit as this worker sees it
(`destinations()`: the same numbers as the `nudgeflow_circuit_breaker_state`,
`nudgeflow_circuit_failure_ratio` and `nudgeflow_delivery_waiting` metrics).
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

from aiohttp import WSMsgType, web

from nudgeflow.analytics.service import Analytics
from nudgeflow.observability import metrics
from nudgeflow.web.auth import require_token

STATIC = Path(__file__).resolve().parent / "static"
STATS_EVERY_S = 2.0
CIRCUIT_STATES = {0: "closed", 1: "half-open", 2: "open"}  # metrics.circuit_state's values


def _by_destination(collector: Any) -> dict[str, float]:
    return {
        sample.labels["destination"]: sample.value
        for family in collector.collect()
        for sample in family.samples
        if "destination" in sample.labels
    }


def destinations() -> list[dict[str, Any]]:
    """Per destination, from this worker's metrics: its circuit's state, the failed share
    of its calls in the breaker's window, and the deliveries parked for it (waiting for
    the circuit) in the partitions this worker owns."""
    states = _by_destination(metrics.circuit_state)
    ratios = _by_destination(metrics.circuit_failure_ratio)
    waiting = _by_destination(metrics.delivery_waiting)
    return [
        {
            "destination": name,
            "state": CIRCUIT_STATES.get(int(states.get(name, 0)), "closed"),
            "failure_ratio": ratios.get(name),
            "waiting": int(waiting.get(name, 0)),
        }
        for name in sorted(states.keys() | ratios.keys() | waiting.keys())
    ]


class ConsoleViews:
    def __init__(self, analytics: Analytics) -> None:
        self.analytics = analytics

    async def index(self, request: web.Request) -> web.FileResponse:
        return web.FileResponse(STATIC / "index.html")

    def _stats(self) -> dict[str, Any]:
        return {**self.analytics.stats(), "destinations": destinations()}

    async def stats(self, request: web.Request) -> web.Response:
        return web.json_response(self._stats())

    async def websocket(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(heartbeat=30.0)
        await ws.prepare(request)
        queue = self.analytics.subscribe()
        reader = asyncio.create_task(_until_closed(ws))
        try:
            feed = self.analytics.aggregates.recent()
            await ws.send_json({"type": "snapshot", "feed": feed, "stats": self._stats()})
            loop = asyncio.get_running_loop()
            next_stats = loop.time() + STATS_EVERY_S
            while not ws.closed and not reader.done():
                wait = max(0.0, next_stats - loop.time())
                with contextlib.suppress(TimeoutError):
                    item = await asyncio.wait_for(queue.get(), timeout=wait)
                    await ws.send_json({"type": "feed", "item": item})
                if loop.time() >= next_stats:
                    await ws.send_json({"type": "stats", "stats": self._stats()})
                    next_stats = loop.time() + STATS_EVERY_S
        except ConnectionResetError:
            pass  # the browser went away mid-send
        finally:
            self.analytics.unsubscribe(queue)
            reader.cancel()
        return ws


async def _until_closed(ws: web.WebSocketResponse) -> None:
    """Read (and ignore) client messages, so close frames and pings are handled."""
    async for msg in ws:
        if msg.type in (WSMsgType.CLOSE, WSMsgType.ERROR):
            return


async def _no_icon(request: web.Request) -> web.Response:
    return web.Response(status=204)


def add_console_routes(app: web.Application, analytics: Analytics, token: str | None) -> None:
    views = ConsoleViews(analytics)
    app.router.add_get("/", views.index)
    app.router.add_get("/favicon.ico", _no_icon)
    app.router.add_static("/static/", STATIC, name="console-static")
    app.router.add_get("/console/stats", require_token(token)(views.stats))
    app.router.add_get("/ws/console", require_token(token, allow_query=True)(views.websocket))
