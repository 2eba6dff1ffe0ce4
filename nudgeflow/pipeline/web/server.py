"""The worker's own aiohttp server (Faust's legacy web stack is disabled).

It starts with the worker, before table recovery, so `/health` answers while
`/ready` still says no. Routes: ingestion (HTTP, Segment, WebSocket), health,
readiness, Prometheus metrics, and the admin/user views.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from aiohttp import web
from mode import Service
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from nudgeflow.engine.durations import parse_duration
from nudgeflow.events.parse import EventLimits
from nudgeflow.pipeline import metrics
from nudgeflow.pipeline.web.ingest import IngestOptions, add_ingest_routes
from nudgeflow.pipeline.web.sink import KafkaEventSink

if TYPE_CHECKING:
    from nudgeflow.pipeline.app import Runtime

log = logging.getLogger(__name__)

RUNTIME_KEY: web.AppKey[Runtime] = web.AppKey("runtime")


def readiness(rt: Runtime) -> tuple[bool, str]:
    app = rt.app
    if app.rebalancing:
        return False, "rebalancing"
    if not app.consumer.assignment():
        return False, "no partitions assigned yet"
    recovery = app.tables.recovery
    if recovery.in_recovery or not recovery.completed.is_set():
        return False, "recovering tables"
    return True, "ready"


async def health(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def ready(request: web.Request) -> web.Response:
    ok, why = readiness(request.app[RUNTIME_KEY])
    return web.json_response({"ready": ok, "status": why}, status=200 if ok else 503)


async def prometheus(request: web.Request) -> web.Response:
    return web.Response(
        body=generate_latest(metrics.REGISTRY), headers={"Content-Type": CONTENT_TYPE_LATEST}
    )


def build_web_app(rt: Runtime) -> web.Application:
    s = rt.settings
    app = web.Application(client_max_size=s.max_body_bytes + 64 * 1024)
    app[RUNTIME_KEY] = rt
    app.router.add_get("/health", health)
    app.router.add_get("/ready", ready)
    app.router.add_get("/metrics", prometheus)
    options = IngestOptions(
        api_token=s.api_token.get_secret_value() if s.api_token else None,
        segment_write_keys=frozenset(s.segment_write_keys),
        max_body_bytes=s.max_body_bytes,
        max_batch=s.max_batch,
        limits=EventLimits(
            max_bytes=s.max_event_bytes,
            max_age_ms=parse_duration(s.max_event_age),
            max_skew_ms=parse_duration(s.max_event_skew),
        ),
    )
    add_ingest_routes(app, KafkaEventSink(rt.app, rt.topics.events), options)
    return app


class WebServer(Service):
    """Runs the aiohttp app for the lifetime of the worker."""

    def __init__(self, rt: Runtime, **kwargs: object) -> None:
        self.rt = rt
        self._runner: web.AppRunner | None = None
        super().__init__(**kwargs)

    async def on_start(self) -> None:
        self._runner = web.AppRunner(build_web_app(self.rt), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.rt.settings.web_host, self.rt.settings.web_port)
        await site.start()
        log.info("web server on http://%s:%d", self.rt.settings.web_host, self.rt.settings.web_port)

    async def on_stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
