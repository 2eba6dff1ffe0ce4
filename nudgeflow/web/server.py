"""The worker's own aiohttp server (Faust's legacy web stack is disabled).

It starts with the worker, before table recovery, so `/health` answers while
`/ready` still says no. Routes: ingestion (HTTP, Segment, WebSocket), health,
readiness, Prometheus metrics, tracked clicks and opens, and the admin/user views.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from aiohttp import web
from mode import Service, ServiceT
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from nudgeflow.analytics.service import Analytics
from nudgeflow.config.build import link_signer
from nudgeflow.observability import metrics
from nudgeflow.pipeline import probes
from nudgeflow.web.accept_errors import AcceptErrorLog
from nudgeflow.web.connections import (
    ACCEPT_BATCH,
    ConnectionGuard,
    ConnectionLimits,
    GuardedSite,
    fd_ceiling,
    gate,
)
from nudgeflow.web.console import add_console_routes
from nudgeflow.web.erase import add_erase_routes
from nudgeflow.web.errors import json_errors
from nudgeflow.web.experiments import add_experiment_routes
from nudgeflow.web.ingest import IngestOptions, add_ingest_routes
from nudgeflow.web.openapi import openapi_view
from nudgeflow.web.origins import OriginPolicy, origin_guard
from nudgeflow.web.rules import add_rule_routes
from nudgeflow.web.sink import KafkaEventSink
from nudgeflow.web.tracking import add_tracking_routes
from nudgeflow.web.users import add_user_routes

if TYPE_CHECKING:
    from nudgeflow.pipeline.runtime import Runtime

log = logging.getLogger(__name__)

RUNTIME_KEY: web.AppKey[Runtime] = web.AppKey("runtime")
GUARD_KEY: web.AppKey[ConnectionGuard] = web.AppKey("connection_guard")
# After answering a request whose body it did not read (a 401, a 408 for a slow body),
# aiohttp reads what is left for this long before closing (its default, 10 s, lets a
# trickling client keep the connection that much longer).
LINGERING_S = 2.0
# A tracked click waits at most this for Kafka before the redirect (web/tracking.py).
TRACKING_SEND_S = 3.0


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
    rt = request.app[RUNTIME_KEY]
    ok, why = readiness(rt)
    rules = {"version": rt.live.version, "error": rt.rules_error}  # live rules (§3.3)
    return web.json_response(
        {"ready": ok, "status": why, "rules": rules}, status=200 if ok else 503
    )


async def prometheus(request: web.Request) -> web.Response:
    """The exposition; `?name[]=...` (repeatable) keeps only those samples, as the
    Prometheus client's own handlers do, so a frequent poller pays for what it reads."""
    names = request.query.getall("name[]", [])
    registry = metrics.REGISTRY.restricted_registry(names) if names else metrics.REGISTRY
    return web.Response(
        body=generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
    )


def connection_guard(rt: Runtime) -> ConnectionGuard:
    """The caps from the settings, under the ceiling this process's RLIMIT_NOFILE allows."""
    s = rt.settings
    ceiling, nofile = fd_ceiling(s.http_fd_reserve, ACCEPT_BATCH)
    limits = ConnectionLimits(
        max_total=min(s.http_max_connections, ceiling),
        max_per_client=s.http_max_connections_per_client,
        ceiling=ceiling,
    )
    log.info(
        "web connections: %d admitted (%d per client address), at most %d open "
        "(RLIMIT_NOFILE %s - reserve %d - accept batch %d)",
        limits.max_total,
        limits.max_per_client,
        ceiling,
        nofile if nofile is not None else "unlimited",
        s.http_fd_reserve,
        ACCEPT_BATCH,
    )
    return ConnectionGuard(limits)


def build_web_app(rt: Runtime, analytics: Analytics) -> web.Application:
    s = rt.settings
    guard = connection_guard(rt)
    origins = OriginPolicy.of(
        s.allowed_origins, [s.advertised_url, f"http://{s.web_host}:{s.web_port}"]
    )
    app = web.Application(
        client_max_size=s.max_body_bytes + 64 * 1024,
        middlewares=[gate(guard), origin_guard(origins), json_errors],
    )
    app[RUNTIME_KEY] = rt
    app[GUARD_KEY] = guard
    app.router.add_get("/health", health)
    app.router.add_get("/ready", ready)
    app.router.add_get("/metrics", prometheus)
    options = IngestOptions(
        api_token=s.api_token.get_secret_value() if s.api_token else None,
        segment_write_keys=frozenset(s.segment_write_keys),
        max_body_bytes=s.max_body_bytes,
        max_batch=s.max_batch,
        limits=s.event_limits(),
        body_timeout_s=s.http_body_timeout_s,
    )
    add_ingest_routes(app, KafkaEventSink(rt.sender, rt.topics.events), options)
    tracking_sink = KafkaEventSink(rt.sender, rt.topics.events, timeout_s=TRACKING_SEND_S)
    add_tracking_routes(app, link_signer(s), tracking_sink, options.limits)
    add_user_routes(app, rt, options.api_token)
    add_erase_routes(app, rt, options.api_token)
    add_experiment_routes(app, analytics, options.api_token)
    add_rule_routes(app, rt, analytics, options.api_token)
    add_console_routes(app, analytics, options.api_token)
    app.router.add_get("/openapi.json", openapi_view(token_required=s.api_token is not None))
    return app


class WebServer(Service):
    """Runs the aiohttp app for the lifetime of the worker."""

    def __init__(self, rt: Runtime, analytics: Analytics, **kwargs: Any) -> None:
        self.rt = rt
        self.analytics = analytics
        self._runner: web.AppRunner | None = None
        self._accept_log = AcceptErrorLog()
        probes.install(rt)  # sources of what /metrics exports; before the app starts
        super().__init__(**kwargs)

    def on_init_dependencies(self) -> Iterable[ServiceT]:
        """The analytics consumer runs as long as the web server that shows it."""
        return [self.analytics]

    async def on_start(self) -> None:
        """aiohttp's keep-alive timeout is the header deadline and the idle timeout; every
        connection goes through the guard (web/connections.py)."""
        s = self.rt.settings
        app = build_web_app(self.rt, self.analytics)
        self._runner = web.AppRunner(
            app,
            access_log=None,
            keepalive_timeout=s.http_idle_timeout_s,
            lingering_time=LINGERING_S,
        )
        await self._runner.setup()
        self._accept_log.install(asyncio.get_running_loop())
        site = GuardedSite(self._runner, s.web_host, s.web_port, app[GUARD_KEY])
        await site.start()
        log.info("web server on http://%s:%d", s.web_host, s.web_port)

    async def on_stop(self) -> None:
        self._accept_log.uninstall(asyncio.get_running_loop())
        if self._runner is not None:
            await self._runner.cleanup()
