"""The OpenAPI description of the live rules routes (web/rules.py, DESIGN §3.3).

Kept apart from web/openapi.py (at its size limit), which merges these paths.
"""

from __future__ import annotations

from nudgeflow.web.openapi_schemas import Json
from nudgeflow.web.openapi_schemas import ref as _ref

_OBJECT: Json = {"type": "object"}


def _answer(description: str, schema: Json | None = None) -> Json:
    return {
        "description": description,
        "content": {"application/json": {"schema": schema or _ref("Error")}},
    }


def _operation(summary: str, op_id: str, ok: tuple[str, str], **more: Json) -> Json:
    unauthorized = _answer("Missing or invalid credentials")
    unauthorized["headers"] = {"WWW-Authenticate": {"schema": {"type": "string"}}}
    return {
        "summary": summary,
        "tags": ["rules"],
        "operationId": op_id,
        "responses": {ok[0]: _answer(ok[1], _OBJECT), "401": unauthorized, **more},
        "security": "token",
    }


_NULLABLE: Json = {"type": ["string", "null"]}
_INVALID: Json = {
    "type": "object",
    "required": ["error", "code", "message", "errors"],
    "properties": {
        "error": {"type": "string"},
        "code": {"type": "string"},
        "message": {"type": "string"},
        "errors": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["rule", "field", "message"],
                "properties": {
                    "rule": _NULLABLE,
                    "field": _NULLABLE,
                    "message": {"type": "string"},
                },
            },
        },
    },
}
_UNAVAILABLE: Json = {
    **_answer("Kafka cannot read or write the rules topic now; retry"),
    "headers": {"Retry-After": {"schema": {"type": "string"}, "description": "seconds"}},
}
_HISTORY: Json = {
    "type": "object",
    "required": ["live", "versions"],
    "properties": {
        "live": {"type": "integer", "description": "the version this worker runs (0: none)"},
        "versions": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["version", "sha256", "author", "time", "comment", "paused", "diff"],
                "properties": {
                    "version": {"type": "integer"},
                    "sha256": {"type": "string"},
                    "author": {"type": "string"},
                    "time": {"type": "string"},
                    "comment": {"type": "string"},
                    "paused": {"type": "array", "items": {"type": "string"}},
                    "diff": {"type": "string", "description": "unified, from the one before"},
                },
            },
        },
    },
}
_PUT_BODY: Json = {
    "type": "object",
    "required": ["document"],
    "additionalProperties": False,
    "properties": {
        "document": {"type": "string", "description": "the rules file's YAML text"},
        "comment": {"type": "string"},
        "author": {"type": "string"},
        "expected": {
            "type": "integer",
            "minimum": 0,
            "description": "the live version this is based on (409 if another is live)",
        },
    },
}


def rule_paths(funnel: Json) -> Json:
    """GET/PUT /rules, GET /rules/history, GET /rules/{rule} (`funnel`, web/openapi.py's),
    pause and resume."""
    name = [{"name": "rule", "in": "path", "required": True, "schema": {"type": "string"}}]
    toggles: Json = {}
    for verb in ("pause", "resume"):
        op = _operation(
            f"{verb.capitalize()} a rule: publishes the live document with it {verb}d",
            f"{verb}_rule",
            ("200", "The new version (or changed: false when it was already so)"),
            **{
                "404": _answer("No such rule in the live version, or no version yet"),
                "409": _answer("Another applier published first; retry"),
                "503": _UNAVAILABLE,
            },
        )
        op["parameters"] = name
        toggles[f"/rules/{{rule}}/{verb}"] = {"post": op}
    put = _operation(
        "Publish a rules document as the next version (validated as at worker start)",
        "put_rules",
        ("201", "Published: version, sha256, diff against the previous version"),
        **{
            "400": _answer("The body is not JSON"),
            "413": _answer("The document is over the size limit; nothing published"),
            "415": _answer("Not a JSON content type"),
            "422": _answer(
                "Invalid document: errors name rule and field; nothing published", _INVALID
            ),
            "409": _answer("`expected` is not live, or another applier won the number"),
            "503": _UNAVAILABLE,
        },
    )
    put["requestBody"] = {
        "required": True,
        "content": {"application/json": {"schema": _PUT_BODY}},
    }
    listing = _operation(
        "The live rules version on this worker and its rules",
        "list_rules",
        ("200", "version, sha256, author, time, comment, paused, error, rules"),
    )
    past = _operation(
        "Every rules version, newest first, each with its diff against the one before",
        "rules_history",
        ("200", "live, versions: [{version, sha256, author, time, comment, paused, diff}]"),
        **{"503": _UNAVAILABLE},
    )
    past["responses"]["200"] = _answer("live and the versions", _HISTORY)
    return {
        "/rules": {"get": listing, "put": put},
        "/rules/history": {"get": past},
        "/rules/{rule}": funnel,
        **toggles,
    }
