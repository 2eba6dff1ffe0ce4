"""GET /rules/<name>: a rule's per-step funnel, from the global aggregates (DESIGN §3.1).

Per step (in the rule's order, named by its label): entered, sent, suppressed by
reason, exited by reason, converted, as Braze's Canvas analytics show a flow. Every
worker answers with the same numbers: the analytics service reads all partitions of
the audit topics (analytics/aggregates.py, engine/funnel.py says what counts).
"""

from __future__ import annotations

from aiohttp import web

from nudgeflow.analytics.service import Analytics
from nudgeflow.web.auth import require_token
from nudgeflow.web.errors import json_error


class RuleViews:
    def __init__(self, analytics: Analytics) -> None:
        self.analytics = analytics

    async def get_rule(self, request: web.Request) -> web.Response:
        name = request.match_info["rule"]
        body = self.analytics.aggregates.rule_funnel(name)
        if body is None:
            return json_error(404, f"no rule {name!r}", code="unknown_rule")
        body["caught_up"] = self.analytics.caught_up
        return web.json_response(body)


def add_rule_routes(app: web.Application, analytics: Analytics, token: str | None) -> None:
    app.router.add_get("/rules/{rule}", require_token(token)(RuleViews(analytics).get_rule))
