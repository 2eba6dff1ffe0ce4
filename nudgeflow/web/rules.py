"""The rules over HTTP (DESIGN §3.1, §3.3).

GET /rules: the live version this worker runs (number, sha256, author, time, comment,
paused rules, a version that failed to load here) and its rules. GET /rules/<name>: a
rule's per-step funnel (analytics/aggregates.py, engine/funnel.py), with its version
and whether it is paused. PUT /rules `{document, comment?, expected?}`: the document
validated as the worker start validates it (422 naming rule and field for each
problem, nothing published; 413 over the size limit; 409 when `expected` is not the
live version or another applier won the number), then published as the next version.
POST /rules/<name>/pause and /resume: the same document, the rule paused or not.
GET /rules/history: every version, newest first, each with its diff against the one before.
Every worker follows the rules topic and swaps within seconds (pipeline/live_rules.py).

GET /rules and /rules/history answer from the versions the follower has read
(`Runtime.rules_book`), not from a read of the topic per call (the console polls both
every 10 s per open page). Called before the follower has caught up with the topic, they
wait for it (a condition, up to CATCH_UP_WAIT_S), then read the topic if it still has
not; a worker with no follower (no evaluate role) reads the topic. PUT, pause and resume
return once this worker's follower has acted on the version published (swapped to it or
refused it; up to SEEN_WAIT_S), so a GET on the same worker right after shows it.
"""

from __future__ import annotations

import json
import logging
import re
from typing import TYPE_CHECKING, Any

from aiohttp import web
from aiokafka.errors import KafkaError

from nudgeflow.analytics.service import Analytics
from nudgeflow.config.loader import ConfigError
from nudgeflow.config.versions import MAX_DOCUMENT_BYTES, Conflict, history
from nudgeflow.kafka import ruleset
from nudgeflow.web.auth import require_token
from nudgeflow.web.errors import json_error

if TYPE_CHECKING:
    from nudgeflow.pipeline.runtime import Runtime

log = logging.getLogger(__name__)

_PROBLEM = re.compile(
    r"^(?:[^:]+): (?:rules\[(?P<rule>[^\]]+)\]\.?)?(?P<field>[^:]*): (?P<msg>.*)$"
)
API_AUTHOR = "http"
CATCH_UP_WAIT_S = 5.0  # a GET before the follower has read the topic once waits this long
SEEN_WAIT_S = 10.0  # a PUT waits this long for this worker to act on its version


def problems_of(error: ConfigError) -> list[dict[str, Any]]:
    """`<source>: rules[<rule>].<field>: <what>` lines as `{rule, field, message}`."""
    out: list[dict[str, Any]] = []
    for line in str(error).splitlines():
        if line[:1].isspace() and out:  # a message's own continuation (YAML's "in ...")
            out[-1]["message"] += " " + line.strip()
            continue
        m = _PROBLEM.match(line)
        if m is None:
            out.append({"rule": None, "field": None, "message": line})
        else:
            out.append({"rule": m["rule"], "field": m["field"] or None, "message": m["msg"]})
    return out


class RuleViews:
    def __init__(self, rt: Runtime, analytics: Analytics) -> None:
        self.rt = rt
        self.analytics = analytics
        self.broker = rt.settings.broker
        self.prefix = rt.settings.topic_prefix

    def _version(self) -> dict[str, Any]:
        rt = self.rt
        return {
            "version": rt.live.version,
            "error": rt.rules_error,
            "swap_delay_s": rt.rules_swap_delay_s,
        }

    async def _book(self) -> ruleset.RuleBook | None:
        """The follower's versions once it has caught up; None: read the topic."""
        # getattr: a unit test's stand-in runtime has no book (it reads the "topic")
        book: ruleset.RuleBook | None = getattr(self.rt, "rules_book", None)
        if book is None or not book.followed:
            return None
        return book if await book.wait_caught_up(CATCH_UP_WAIT_S) else None

    async def _seen(self, version: int) -> None:
        """Until this worker's follower has acted on `version` (read-after-write)."""
        book = await self._book()
        if book is not None and not await book.wait_handled(version, SEEN_WAIT_S):
            log.warning(
                "rules version %d published; not read here after %.0fs", version, SEEN_WAIT_S
            )

    async def list_rules(self, request: web.Request) -> web.Response:
        engine = self.rt.live.engine
        body = self._version()
        version = self.rt.live.version
        if version:
            book = await self._book()
            record = book.won.get(version) if book is not None else None
            try:
                if record is None:
                    record = await ruleset.load_version(self.broker, self.prefix, version)
                body.update(
                    sha256=record.sha256,
                    author=record.author,
                    time=record.time,
                    comment=record.comment,
                    paused=record.paused,
                )
            except (LookupError, OSError):
                pass
        body["rules"] = [{"name": r.name, "paused": r.paused} for r in engine.rules.values()]
        return web.json_response(body)

    async def history(self, request: web.Request) -> web.Response:
        book = await self._book()
        if book is not None:
            return web.json_response({"live": self.rt.live.version, "versions": book.history()})
        try:
            won = await ruleset.read_versions(self.broker, ruleset.rules_topic(self.prefix))
        except (KafkaError, OSError, TimeoutError) as exc:
            return _unavailable(exc)
        body = {"live": self.rt.live.version, "versions": history(won)}
        return web.json_response(body)

    async def get_rule(self, request: web.Request) -> web.Response:
        name = request.match_info["rule"]
        body = self.analytics.aggregates.rule_funnel(name)
        if body is None:
            return json_error(404, f"no rule {name!r}", code="unknown_rule")
        body["caught_up"] = self.analytics.caught_up
        rule = self.rt.live.engine.rules.get(name)
        body["rule_version"] = self.rt.live.version
        body["paused"] = rule.paused if rule is not None else None
        return web.json_response(body)

    async def put_rules(self, request: web.Request) -> web.Response:
        if (request.content_length or 0) > MAX_DOCUMENT_BYTES + 64 * 1024:
            return _too_large()
        raw = await request.read()
        if len(raw) > MAX_DOCUMENT_BYTES + 64 * 1024:
            return _too_large()
        try:
            body = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            return json_error(400, "the body is not JSON", code="invalid_json")
        problem = _shape_problem(body)
        if problem:
            field, what = problem
            said = f"{field}: {what}" if field else what
            errors = [{"rule": None, "field": field, "message": what}]
            return json_error(422, said, code="invalid_request", errors=errors)
        try:
            applied = await ruleset.apply(
                self.broker,
                self.prefix,
                body["document"],
                author=str(body.get("author") or API_AUTHOR),
                comment=str(body.get("comment") or ""),
                expected=body.get("expected"),
            )
        except ruleset.DocumentTooLarge:
            return _too_large()
        except ConfigError as exc:
            return json_error(
                422,
                "invalid rules document; nothing published",
                code="invalid_document",
                errors=problems_of(exc),
            )
        except Conflict as exc:
            return _conflict(exc)
        except (KafkaError, OSError, TimeoutError) as exc:
            return _unavailable(exc)
        await self._seen(applied.record.version)
        return _applied(applied, 201)

    async def pause(self, request: web.Request) -> web.Response:
        return await self._set_paused(request, True)

    async def resume(self, request: web.Request) -> web.Response:
        return await self._set_paused(request, False)

    async def _set_paused(self, request: web.Request, paused: bool) -> web.Response:
        name = request.match_info["rule"]
        try:
            applied = await ruleset.set_paused(
                self.broker, self.prefix, name, paused, author=API_AUTHOR
            )
        except LookupError as exc:
            return json_error(404, str(exc.args[0] if exc.args else exc), code="unknown_rule")
        except Conflict as exc:
            return _conflict(exc)
        except (KafkaError, OSError, TimeoutError) as exc:
            return _unavailable(exc)
        if applied is None:
            return web.json_response({"rule": name, "paused": paused, "changed": False})
        await self._seen(applied.record.version)
        return _applied(applied, 200, rule=name, paused=paused, changed=True)


def _shape_problem(body: Any) -> tuple[str | None, str] | None:
    """(field, what) of a body that is not `{document, comment?, author?, expected?}`."""
    if not isinstance(body, dict):
        return None, "the body must be a JSON object {document, comment?, expected?}"
    if not isinstance(body.get("document"), str):
        return "document", "required, the YAML text of the rules"
    for key in ("comment", "author"):
        if key in body and not isinstance(body[key], str):
            return key, "must be a string"
    expected = body.get("expected")
    if expected is not None and (
        not isinstance(expected, int) or isinstance(expected, bool) or expected < 0
    ):
        return "expected", "must be a version number (an integer >= 0)"
    extra = set(body) - {"document", "comment", "author", "expected"}
    if extra:
        return sorted(extra)[0], "unknown key"
    return None


def _too_large() -> web.Response:
    return json_error(
        413, f"the document is over {MAX_DOCUMENT_BYTES} bytes; nothing published", code="too_large"
    )


def _unavailable(exc: Exception) -> web.Response:
    return json_error(
        503,
        f"the rules topic cannot be read or written now ({type(exc).__name__}); retry",
        code="kafka_unavailable",
        headers={"Retry-After": "1"},
    )


def _conflict(exc: Conflict) -> web.Response:
    return json_error(
        409, str(exc), code="version_conflict", extra={"live_version": exc.live_version}
    )


def _applied(applied: ruleset.Applied, status: int, **extra: Any) -> web.Response:
    r = applied.record
    body = {"version": r.version, "sha256": r.sha256, "previous": applied.previous}
    body.update(diff=applied.diff, paused_rules=r.paused, **extra)
    return web.json_response(body, status=status)


def add_rule_routes(
    app: web.Application, rt: Runtime, analytics: Analytics, token: str | None
) -> None:
    views = RuleViews(rt, analytics)
    guard = require_token(token)
    app.router.add_get("/rules", guard(views.list_rules))
    app.router.add_put("/rules", guard(views.put_rules))
    app.router.add_get("/rules/history", guard(views.history))  # before /rules/{rule}
    app.router.add_get("/rules/{rule}", guard(views.get_rule))
    app.router.add_post("/rules/{rule}/pause", guard(views.pause))
    app.router.add_post("/rules/{rule}/resume", guard(views.resume))
