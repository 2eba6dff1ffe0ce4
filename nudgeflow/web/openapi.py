"""The OpenAPI 3.1 description of the worker's HTTP API, served at `GET /openapi.json`.

It is written by hand from the handlers' behaviour (web/ingest.py, web/server.py)
and checked against a live worker by schemathesis (tests/faults/test_fuzz_http.py),
so a response the document does not describe fails the suite. A path is listed
only when the app actually mounts it, and the security requirements follow the
configuration: with an API token set, ingestion needs it; without, it is optional.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from nudgeflow.web.openapi_rules import rule_paths
from nudgeflow.web.openapi_schemas import SCHEMAS, Json
from nudgeflow.web.openapi_schemas import ref as _ref

VERSION = "1.0.0"
_JSON = "application/json"


def _content(schema: Json, media: str = _JSON) -> Json:
    return {"content": {media: {"schema": schema}}}


def _response(description: str, schema: Json | None = None, **headers: Json) -> Json:
    out: Json = {"description": description}
    if schema is not None:
        out.update(_content(schema))
    if headers:
        out["headers"] = headers
    return out


_RETRY_AFTER = {"schema": {"type": "string"}, "description": "seconds"}
_AUTHENTICATE = {"schema": {"type": "string"}}


def _ingest_responses(accepted: str) -> Json:
    return {
        "202": _response(accepted, _ref("Accepted")),
        "400": _response("Invalid events: one entry per bad index and field", _ref("Error")),
        "401": _response(
            "Missing or invalid credentials", _ref("Error"), **{"WWW-Authenticate": _AUTHENTICATE}
        ),
        "403": _response("A browser page on an origin that is not allowed", _ref("Error")),
        "408": _response("The body did not arrive within http_body_timeout_s", _ref("Error")),
        "413": _response("Body or an event is too large", _ref("Error")),
        "415": _response("Not a JSON content type", _ref("Error")),
        "503": _response(
            "Kafka cannot store events now, or too many connections; retry (event_id deduplicates)",
            _ref("Error"),
            **{"Retry-After": _RETRY_AFTER},
        ),
    }


def _json_body(schema: Json, *, text_plain: bool = True) -> Json:
    """JSON request body; on the Segment routes text/plain too (what analytics.js sends,
    read as JSON); not on POST /events (web/origins.py says why)."""
    content: Json = {_JSON: {"schema": schema}}
    if text_plain:
        content["text/plain"] = {"schema": {"type": "string"}}
    return {"required": True, "content": content}


def _segment_call(call: str) -> Json:
    return {
        "post": {
            "summary": f"Segment `{call}` call",
            "tags": ["ingestion"],
            "operationId": f"segment_{call}",
            "requestBody": _json_body(_ref("SegmentMessage")),
            "responses": _ingest_responses("The call was stored as one event"),
            "security": "segment",
        }
    }


def _paths() -> Json:
    paths: Json = {
        "/events": {
            "post": {
                "summary": "Ingest one event or a batch",
                "tags": ["ingestion"],
                "operationId": "post_events",
                "requestBody": _json_body(_ref("EventBody"), text_plain=False),
                "responses": _ingest_responses("Every event was stored"),
                "security": "token",
            }
        },
        "/v1/batch": {
            "post": {
                "summary": "Segment batch",
                "tags": ["ingestion"],
                "operationId": "segment_batch",
                "requestBody": _json_body(_ref("SegmentBatch")),
                "responses": _ingest_responses("Every call was stored (or ignored)"),
                "security": "segment",
            }
        },
        "/ws/events": {
            "get": {
                "summary": "WebSocket ingestion: one JSON event per message, one ack each",
                "description": (
                    "Each message is acknowledged with "
                    '`{"ok": true, "seq": n, "event_id": ...}` or '
                    '`{"ok": false, "seq": n, "errors": [...], "retry"?: true}`. '
                    "Browsers may pass the token as `?access_token=`."
                ),
                "tags": ["ingestion"],
                "operationId": "ws_events",
                "responses": {
                    "101": {"description": "Switching to the WebSocket protocol"},
                    "400": _response("Not a WebSocket upgrade request", _ref("Error")),
                    "401": _response(
                        "Missing or invalid credentials",
                        _ref("Error"),
                        **{"WWW-Authenticate": _AUTHENTICATE},
                    ),
                },
                "security": "websocket",
            }
        },
        "/health": {
            "get": {
                "summary": "Liveness: the process serves HTTP",
                "tags": ["operations"],
                "operationId": "health",
                "responses": {"200": _response("Alive", _ref("Health"))},
                "security": "open",
            }
        },
        "/ready": {
            "get": {
                "summary": "Readiness: partitions assigned and tables recovered",
                "tags": ["operations"],
                "operationId": "ready",
                "responses": {
                    "200": _response("Ready", _ref("Ready")),
                    "503": _response("Not ready yet (says why)", _ref("Ready")),
                },
                "security": "open",
            }
        },
        "/metrics": {
            "get": {
                "summary": "Prometheus metrics (no user ids, no secrets)",
                "tags": ["operations"],
                "operationId": "metrics",
                "responses": {
                    "200": {
                        "description": "Prometheus text format",
                        **_content({"type": "string"}, "text/plain"),
                    },
                },
                "security": "open",
            }
        },
        "/openapi.json": {
            "get": {
                "summary": "This document",
                "tags": ["operations"],
                "operationId": "openapi",
                "responses": {"200": _response("OpenAPI 3.1", {"type": "object"})},
                "security": "open",
            }
        },
    }
    paths.update(_admin_paths())
    paths.update(_tracking_paths())
    for path, call in (
        ("/v1/track", "track"),
        ("/v1/identify", "identify"),
        ("/v1/page", "page"),
        ("/v1/screen", "screen"),
        ("/v1/alias", "alias"),
    ):
        paths[path] = _segment_call(call)
        short = _segment_call(call)
        short["post"]["operationId"] += "_short"
        short["post"]["summary"] += " (short path)"
        paths[path[:5]] = short
    short_batch = {"post": {**paths["/v1/batch"]["post"], "operationId": "segment_batch_short"}}
    paths["/v1/b"] = short_batch
    return paths


def _tracking_paths() -> Json:
    """Tracked clicks and open pixels (web/tracking.py): the signature is the credential."""
    refused = {
        "400": _response("Bad, forged or truncated token: no redirect", _ref("Error")),
        "404": _response("Not a tracking path", _ref("Error")),
        "410": _response("The link expired: no redirect", _ref("Error")),
    }

    def route(summary: str, op_id: str, ok: Json) -> Json:
        return {
            "get": {
                "summary": summary,
                "tags": ["tracking"],
                "operationId": op_id,
                "parameters": [_path_param("token")],
                "responses": {**ok, **refused},
                "security": "open",
            }
        }

    location = {"schema": {"type": "string"}, "description": "the link the token signs"}
    gif = {"description": "A 1x1 GIF", **_content({"type": "string"}, "image/gif")}
    return {
        "/r/{token}": route(
            "A tracked link: records message_clicked, then redirects",
            "track_click",
            {"302": _response("To the signed link", Location=location)},
        ),
        "/o/{token}.gif": route(
            "An open pixel: records message_opened", "track_open", {"200": gif}
        ),
    }


def _admin_get(summary: str, op_id: str, ok: str, **more: Json) -> Json:
    return {
        "get": {
            "summary": summary,
            "tags": ["admin"],
            "operationId": op_id,
            "responses": {
                "200": _response(ok, {"type": "object"}),
                "401": _response(
                    "Missing or invalid credentials",
                    _ref("Error"),
                    **{"WWW-Authenticate": _AUTHENTICATE},
                ),
                **more,
            },
            "security": "token",
        }
    }


def _path_param(name: str) -> Json:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}


def _erase_user() -> Json:
    """DELETE /users/<id> (web/erase.py)."""
    unauthorized = _response(
        "Missing or invalid credentials", _ref("Error"), **{"WWW-Authenticate": _AUTHENTICATE}
    )
    return {
        "summary": "Erase a user: state, timers, timeline; pending retries dropped",
        "tags": ["admin"],
        "operationId": "erase_user",
        "parameters": [_path_param("user_id")],
        "responses": {
            "204": {"description": "Erased (the tombstones are in the changelogs)"},
            "202": _response("Erasure queued, not yet applied", {"type": "object"}),
            "401": unauthorized,
            "404": _response("No state for this user (or erased already)", _ref("Error")),
            "502": _response("The worker owning the user did not answer", _ref("Error")),
            "503": _response(
                "Partition not assigned, or Kafka unavailable; retry",
                _ref("Error"),
                **{"Retry-After": _RETRY_AFTER},
            ),
        },
        "security": "token",
    }


def _admin_paths() -> Json:
    """Read-only admin views: user state and timeline, experiments, the console."""
    user = _admin_get(
        "One user's state and audit timeline (no secrets)",
        "get_user",
        "The user's state, armed timers, decisions and deliveries",
        **{
            "404": _response("No state for this user", _ref("Error")),
            "502": _response("The worker owning the user did not answer", _ref("Error")),
            "503": _response(
                "Partition not assigned (rebalancing); retry",
                _ref("Error"),
                **{"Retry-After": _RETRY_AFTER},
            ),
        },
    )
    user["get"]["parameters"] = [_path_param("user_id")]
    user["delete"] = _erase_user()
    experiment = _admin_get(
        "One rule's experiment: exposures and conversions by variant",
        "get_experiment",
        "The experiment",
        **{"404": _response("No experiment on this rule", _ref("Error"))},
    )
    experiment["get"]["parameters"] = [_path_param("rule")]
    rule = _admin_get(
        "One rule's funnel: entered, sent, suppressed, exited and converted per step",
        "get_rule",
        "The rule's funnel",
        **{"404": _response("No such rule", _ref("Error"))},
    )
    rule["get"]["parameters"] = [_path_param("rule")]
    console_ws = _admin_get("Live console feed (WebSocket)", "ws_console", "unused")
    responses = console_ws["get"]["responses"]
    responses.pop("200")
    responses["101"] = {"description": "Switching to the WebSocket protocol"}
    responses["400"] = _response("Not a WebSocket upgrade request", _ref("Error"))
    console_ws["get"]["security"] = "websocket"
    return {
        "/users/{user_id}": user,
        "/experiments": _admin_get("Every experiment", "list_experiments", "Experiments"),
        "/experiments/{rule}": experiment,
        **rule_paths(rule),
        "/console/stats": _admin_get("Console statistics", "console_stats", "Statistics"),
        "/ws/console": console_ws,
        "/": {
            "get": {
                "summary": "The web console (a static page; its data routes need the token)",
                "tags": ["admin"],
                "operationId": "console",
                "responses": {
                    "200": {"description": "HTML", **_content({"type": "string"}, "text/html")}
                },
                "security": "open",
            }
        },
    }


def _security(kind: str, token_required: bool) -> list[Json]:
    if kind == "open":
        return []
    schemes: list[Json] = {
        "token": [{"bearerAuth": []}],
        "segment": [{"basicAuth": []}, {"bearerAuth": []}],
        "websocket": [{"bearerAuth": []}, {"accessToken": []}],
    }[kind]
    return schemes if token_required else [*schemes, {}]


def openapi_document(
    *, token_required: bool, mounted: set[str] | None = None, server_url: str | None = None
) -> Json:
    """The description; `mounted` limits it to the paths the app serves."""
    paths: Json = {}
    for path, item in _paths().items():
        if mounted is not None and path not in mounted:
            continue
        paths[path] = {
            method: {**op, "security": _security(op["security"], token_required)}
            for method, op in item.items()
        }
    doc: Json = {
        "openapi": "3.1.0",
        "info": {
            "title": "Nudgeflow worker",
            "version": VERSION,
            "description": (
                "Event ingestion (HTTP, Segment-compatible, WebSocket), health and metrics. "
                "202 means Kafka acknowledged every event; every refusal is a JSON body "
                "saying why."
            ),
        },
        "paths": paths,
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {
                "bearerAuth": {"type": "http", "scheme": "bearer"},
                "basicAuth": {
                    "type": "http",
                    "scheme": "basic",
                    "description": "Segment write key (or the API token) as the user name",
                },
                "accessToken": {"type": "apiKey", "in": "query", "name": "access_token"},
            },
        },
    }
    if server_url is not None:
        doc["servers"] = [{"url": server_url}]
    return doc


def mounted_paths(app: web.Application) -> set[str]:
    """Every path the app's router serves (resource canonical paths)."""
    return {resource.canonical for resource in app.router.resources()}


def openapi_view(*, token_required: bool) -> Callable[[web.Request], Awaitable[web.Response]]:
    """`GET /openapi.json` for an app whose ingestion does (or does not) need a token."""

    async def serve(request: web.Request) -> web.Response:
        doc = openapi_document(
            token_required=token_required,
            mounted=mounted_paths(request.app),
            server_url=f"{request.scheme}://{request.host}",
        )
        return web.json_response(doc)

    return serve
