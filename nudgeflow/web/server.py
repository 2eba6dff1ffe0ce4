"""The worker's own aiohttp server (Faust's legacy web stack is disabled).

It starts with the worker, before table recovery, so `/health` answers while
`/ready` still says no. Routes: ingestion (HTTP, Segment, WebSocket), health,
readiness, Prometheus metrics, and the admin/user views.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from aiohttp import web
from mode import Service, ServiceT
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from nudgeflow.analytics.service import Analytics
from nudgeflow.observability import metrics
from nudgeflow.pipeline import probes
from nudgeflow.web.console import add_console_routes
from nudgeflow.web.errors import json_errors
from nudgeflow.web.experiments import add_experiment_routes
from nudgeflow.web.ingest import IngestOptions, add_ingest_routes
from nudgeflow.web.openapi import openapi_view
from nudgeflow.web.sink import KafkaEventSink
from nudgeflow.web.users import add_user_routes

if TYPE_CHECKING:
    from nudgeflow.pipeline.runtime import Runtime

log = logging.getLogger(__name__)

RUNTIME_KEY: web.AppKey[Runtime] = web.AppKey("runtime")


def readiness(rt: Runtime) -> tuple[bool, str]:
    app = rt.app
    if app.rebalancing:
        return False, "rebalancing"
    try:
        assigned = app.consumer.assignment()
    except Exception:  # ConsumerNotStarted and friends: the worker is still starting
        return False, "starting"
    if not assigned:
        return False, "no partitions assigned yet"
    recovery = app.tables.recovery  # type: ignore[attr-defined]  # TableManager, not the T
    if recovery.in_recovery or not recovery.completed.is_set():
        return False, "recovering tables"
    return True, "ready"


async def health(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def ready(request: web.Request) -> web.Response:
    ok, why = readiness(request.app[RUNTIME_KEY])
    return web.json_response({"ready": ok, "status": why}, status=200 if ok else 503)


async def prometheus(request: web.Request) -> web.Response:
    """The exposition; `?name[]=...` (repeatable) keeps only those samples, as the
    Prometheus client's own handlers do, so a frequent poller pays for what it reads."""
    names = request.query.getall("name[]", [])
    registry = metrics.REGISTRY.restricted_registry(names) if names else metrics.REGISTRY
    return web.Response(
        body=generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
    )


def build_web_app(rt: Runtime, analytics: Analytics) -> web.Application:
    s = rt.settings
    app = web.Application(client_max_size=s.max_body_bytes + 64 * 1024, middlewares=[json_errors])
    app[RUNTIME_KEY] = rt
    app.router.add_get("/health", health)
    app.router.add_get("/ready", ready)
    app.router.add_get("/metrics", prometheus)
    options = IngestOptions(
        api_token=s.api_token.get_secret_value() if s.api_token else None,
        segment_write_keys=frozenset(s.segment_write_keys),
        max_body_bytes=s.max_body_bytes,
        max_batch=s.max_batch,
        limits=s.event_limits(),
    )
    add_ingest_routes(app, KafkaEventSink(rt.sender, rt.topics.events), options)
    add_user_routes(app, rt, options.api_token)
    add_experiment_routes(app, analytics, options.api_token)
    add_console_routes(app, analytics, options.api_token)
    app.router.add_get("/openapi.json", openapi_view(token_required=s.api_token is not None))
    return app


class WebServer(Service):
    """Runs the aiohttp app for the lifetime of the worker."""

    def __init__(self, rt: Runtime, analytics: Analytics, **kwargs: Any) -> None:
        self.rt = rt
        self.analytics = analytics
        self._runner: web.AppRunner | None = None
        probes.install(rt)  # sources of what /metrics exports; before the app starts
        super().__init__(**kwargs)

    def on_init_dependencies(self) -> Iterable[ServiceT]:
        """The analytics consumer runs as long as the web server that shows it."""
        return [self.analytics]

    async def on_start(self) -> None:
        self._runner = web.AppRunner(build_web_app(self.rt, self.analytics), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.rt.settings.web_host, self.rt.settings.web_port)
        await site.start()
        log.info("web server on http://%s:%d", self.rt.settings.web_host, self.rt.settings.web_port)

    async def on_stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
