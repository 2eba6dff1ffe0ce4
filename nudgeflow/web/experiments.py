"""GET /experiments and GET /experiments/<rule>: live results from the global aggregates.

Per variant: exposures, sent, delivered, opened, clicked, converted, conversion
rate with a 95% Wilson interval, uplift and two-proportion p-value against the
control (engine/stats.py); for `allocation: bandit`, the current posteriors.
Every worker answers with the same numbers: the analytics service reads all
partitions of the audit topics.
"""

from __future__ import annotations

from aiohttp import web

from nudgeflow.analytics.service import Analytics
from nudgeflow.web.auth import require_token
from nudgeflow.web.errors import json_error


class ExperimentViews:
    def __init__(self, analytics: Analytics) -> None:
        self.analytics = analytics

    async def list_experiments(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "caught_up": self.analytics.caught_up,
                "experiments": self.analytics.aggregates.experiments(),
            }
        )

    async def get_experiment(self, request: web.Request) -> web.Response:
        rule = request.match_info["rule"]
        body = self.analytics.aggregates.experiment(rule)
        if body is None:
            return json_error(404, f"no experiment on rule {rule!r}", code="unknown_experiment")
        body["caught_up"] = self.analytics.caught_up
        return web.json_response(body)


def add_experiment_routes(app: web.Application, analytics: Analytics, token: str | None) -> None:
    views = ExperimentViews(analytics)
    guard = require_token(token)
    app.router.add_get("/experiments", guard(views.list_experiments))
    app.router.add_get("/experiments/{rule}", guard(views.get_experiment))
