"""GET /users/<id>: one user's state and audit timeline, from whichever worker is asked.

The user's state lives only on the worker that owns the user's partition.
Faust's assignor knows every worker's partitions and web URL (the app's
`canonical_url` is this web server), so a worker that does not own the
partition forwards the request there, once (a forwarded request is always
answered locally, so a stale assignment cannot loop). The view carries no
secrets: no config, no tokens, no trigger bodies.

The forward goes to one fixed route, `/users/<id>`, built from the decoded id
(web/paths.py): never the path the client sent, so `ana%3Fx` cannot become user
`ana` with a query, `pct%2541` cannot be decoded twice into `pctA`, and
`..%2Fmetrics` cannot become a dot segment that lands on another route.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import aiohttp
import msgspec
from aiohttp import web

from nudgeflow.agents.router import partition_for
from nudgeflow.engine import besttime, consent
from nudgeflow.engine.firing import cart_view
from nudgeflow.engine.runs import rule_of
from nudgeflow.engine.scope import user_tz
from nudgeflow.engine.state import CLICKED, CONVERTED, OPENED, UserState
from nudgeflow.engine.timefmt import iso_utc
from nudgeflow.tables import timeline as timeline_table
from nudgeflow.tables import users as users_table
from nudgeflow.tables.timeline import Timeline
from nudgeflow.web.auth import require_token
from nudgeflow.web.errors import json_error
from nudgeflow.web.paths import user_url

if TYPE_CHECKING:
    from nudgeflow.pipeline.runtime import Runtime

log = logging.getLogger(__name__)

FORWARDED = "X-Nudgeflow-Forwarded"
FORWARD_TIMEOUT_S = 10.0


def owner_url(
    metadata: Mapping[str, Mapping[str, Any]], changelog_topic: str, partition: int
) -> str | None:
    """The web URL of the worker holding `partition` of the table, from the assignor's map."""
    for url, topics in metadata.items():
        if partition in topics.get(changelog_topic, ()):
            return url
    return None


def user_view(
    user_id: str, state: UserState | None, timeline: Timeline, now_ms: int
) -> dict[str, Any]:
    """What an operator needs to answer "why did (or didn't) it fire", newest first."""
    armed = []
    if state is not None:
        for rule, a in sorted(state.armed.items(), key=lambda kv: kv[1].deadline):
            armed.append(
                {
                    "rule": rule_of(rule),
                    "step": a.step,
                    "variant": a.variant or None,
                    "deadline": iso_utc(a.deadline),
                    "due_in_s": round((a.deadline - now_ms) / 1000, 3),
                    "armed_at": iso_utc(a.armed_at),
                    "armed_by": a.arm_type,
                    "last_activity": iso_utc(a.last_activity) if a.last_activity else None,
                    "deferred": a.deferred,
                }
            )
            if a.instance:  # a per-instance run of a journey (DESIGN §3.1)
                armed[-1]["instance"] = a.instance
    return {
        "user_id": user_id,
        "known": state is not None,
        # Identity (engine/identity.py): where a merged-away id went; the ids merged in.
        "merged_into": state.alias_of if state is not None else None,
        "absorbed": list(state.absorbed or ()) if state is not None else [],
        "profile": dict(state.profile) if state is not None else {},
        "cart": cart_view(state) if state is not None else None,
        "armed": armed,
        "best_time": besttime.describe(state.activity, user_tz(state)) if state else None,
        # subscription state and when it changed (DESIGN §3.2, engine/consent.py)
        "consent": consent.view(state),
        "last_fired": (
            {rule: iso_utc(ms) for rule, ms in sorted(state.last_fire.items())}
            if state is not None
            else {}
        ),
        "recent_triggers": [
            {
                "trigger_id": f.trigger_id,
                "rule": f.rule,
                "variant": f.variant,
                "at": iso_utc(f.at),
                "opened": bool(f.flags & OPENED),
                "clicked": bool(f.flags & CLICKED),
                "converted": bool(f.flags & CONVERTED),
            }
            for f in reversed(state.fires if state is not None else [])
        ],
        "decisions": [msgspec.to_builtins(d) for d in reversed(timeline.decisions)],
        "deliveries": [msgspec.to_builtins(a) for a in reversed(timeline.deliveries)],
    }


def known(view: Mapping[str, Any]) -> bool:
    """Whether a view shows anything of the user (state, decisions or deliveries)."""
    return bool(view["known"] or view["decisions"] or view["deliveries"])


class UserViews:
    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.changelog = rt.users.changelog_topic.get_topic_name()

    @property
    def own_url(self) -> str:
        return str(self.rt.app.conf.canonical_url)

    def local(self, user_id: str, partition: int) -> dict[str, Any]:
        key = user_id.encode()
        state = users_table.load(self.rt.users, key)
        tl = self.rt.timeline
        timeline = timeline_table.load(tl, key) if tl is not None else Timeline()
        timeline = timeline_table.merged(timeline, state)
        body = user_view(user_id, state, timeline, int(time.time() * 1000))
        body.update(partition=partition, served_by=self.own_url)
        return body

    async def elsewhere(
        self, request: web.Request, user_id: str, partition: int
    ) -> web.StreamResponse | None:
        """The owner's answer (forwarded), or a 503 while no one owns the partition;
        None when this worker answers itself (it owns it, or the request was forwarded)."""
        if request.headers.get(FORWARDED) is not None:
            return None
        metadata = self.rt.app.router.table_metadata(self.rt.users.name)
        owner = owner_url(metadata, self.changelog, partition)
        if owner is None:
            return json_error(
                503,
                "partition not assigned (rebalancing); retry",
                code="unavailable",
                headers={"Retry-After": "2"},
            )
        if owner.rstrip("/") != self.own_url.rstrip("/"):
            return await self.forward(request, owner, user_id)
        return None

    async def get_user(self, request: web.Request) -> web.StreamResponse:
        user_id = request.match_info["user_id"]
        partition = partition_for(user_id.encode(), self.rt.partitions)
        routed = await self.elsewhere(request, user_id, partition)
        if routed is not None:
            return routed
        body = self.local(user_id, partition)
        if not known(body):
            return json_error(404, f"no state for user {user_id!r}", code="unknown_user")
        return web.json_response(body)

    async def forward(self, request: web.Request, owner: str, user_id: str) -> web.StreamResponse:
        """The owner's answer for exactly `user_id` (see the module docstring), to the
        same method (GET, or DELETE: web/erase.py)."""
        headers = {FORWARDED: self.own_url}
        auth = request.headers.get("Authorization")
        if auth is not None:
            headers["Authorization"] = auth
        url = user_url(owner, user_id)
        timeout = aiohttp.ClientTimeout(total=FORWARD_TIMEOUT_S)
        try:
            async with (
                aiohttp.ClientSession(timeout=timeout) as session,
                session.request(request.method, url, headers=headers) as resp,
            ):
                body = await resp.read()
                if resp.status == 204:
                    return web.Response(status=204)
                return web.Response(status=resp.status, body=body, content_type="application/json")
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.warning(
                "%s /users: the owner %s did not answer: %s",
                request.method,
                owner,
                type(exc).__name__,
            )
            return json_error(
                502, "the worker that owns this user did not answer", code="owner_unreachable"
            )


def add_user_routes(app: web.Application, rt: Runtime, token: str | None) -> None:
    views = UserViews(rt)
    app.router.add_get("/users/{user_id}", require_token(token)(views.get_user))
