"""The data schemas of the OpenAPI description (web/openapi.py): events and Segment calls
as producers send them, and the worker's answers (accepted, refused with reasons, health).

They follow nudgeflow/events/parse.py; where the parser is looser than a schema can say
(ids printable, `ts` within the age and skew limits of "now"), the description says so.
"""

from __future__ import annotations

from typing import Any

from nudgeflow.events.parse import MAX_TS_MS, MIN_TS_MS, TYPE_PATTERN

Json = dict[str, Any]


def ref(name: str) -> Json:
    return {"$ref": f"#/components/schemas/{name}"}


_ID = {
    "oneOf": [
        {
            "type": "string",
            "minLength": 1,
            "maxLength": 256,
            "description": "printable, not blank",
        },
        {"type": "integer", "description": "turned into its decimal string"},
    ]
}
_OBJECT_OR_NULL = {"type": ["object", "null"], "description": "nested at most 16 levels"}

SCHEMAS: Json = {
    "Event": {
        "type": "object",
        "description": "One behavioural event. Unknown top-level keys are ignored.",
        "required": ["user_id", "type", "ts"],
        "properties": {
            "user_id": _ID,
            "type": {"type": "string", "pattern": TYPE_PATTERN},
            "ts": {
                "description": (
                    "ISO 8601 time (a naive time is UTC) or epoch milliseconds; between "
                    "2000 and 2100, at most max_event_age old and max_event_skew ahead"
                ),
                "oneOf": [
                    {"type": "string", "format": "date-time", "maxLength": 64},
                    {"type": "number", "minimum": MIN_TS_MS, "exclusiveMaximum": MAX_TS_MS},
                ],
            },
            "event_id": {**_ID, "description": "deduplication key; default: derived"},
            "properties": _OBJECT_OR_NULL,
            "traits": _OBJECT_OR_NULL,
        },
    },
    "EventBody": {
        "description": "One event, or an array of at most max_batch events (all-or-nothing).",
        "oneOf": [
            ref("Event"),
            {"type": "array", "items": ref("Event"), "maxItems": 1000},
        ],
    },
    "SegmentMessage": {
        "type": "object",
        "description": "A Segment Tracking API call (userId or anonymousId required).",
        "properties": {
            "type": {"type": "string"},
            "userId": {"type": ["string", "integer"]},
            "anonymousId": {"type": ["string", "integer"]},
            "event": {"type": "string"},
            "name": {"type": "string"},
            "messageId": {"type": ["string", "integer"]},
            "timestamp": {"type": "string", "format": "date-time"},
            "originalTimestamp": {"type": "string", "format": "date-time"},
            "properties": {"type": "object"},
            "traits": {"type": "object"},
            "context": {"type": "object"},
            "writeKey": {"type": "string"},
        },
    },
    "SegmentBatch": {
        "type": "object",
        "required": ["batch"],
        "properties": {
            "batch": {"type": "array", "items": ref("SegmentMessage"), "maxItems": 1000},
            "context": {"type": "object"},
            "writeKey": {"type": "string"},
        },
    },
    "Accepted": {
        "type": "object",
        "description": "Every event was acknowledged by Kafka.",
        "required": ["accepted"],
        "properties": {
            "accepted": {"type": "integer", "minimum": 0},
            "success": {"type": "boolean", "description": "Segment routes only"},
            "ignored": {
                "type": "array",
                "description": "Calls with nothing to store: group, an alias to itself",
                "items": {
                    "type": "object",
                    "required": ["index", "type", "reason"],
                    "properties": {
                        "index": {"type": "integer"},
                        "type": {"type": "string"},
                        "reason": {"type": "string"},
                    },
                },
            },
        },
    },
    "Error": {
        "type": "object",
        "description": "Why a request was refused; nothing of it was accepted.",
        "required": ["error", "code", "message"],
        "properties": {
            "error": {"type": "string"},
            "code": {"type": "string", "pattern": "^[a-z][a-z0-9_]*$"},
            "message": {"type": "string"},
            "accepted": {"const": 0},
            "errors": {"type": "array", "items": ref("EventProblem")},
        },
    },
    "EventProblem": {
        "type": "object",
        "required": ["index", "reason", "field", "message"],
        "properties": {
            "index": {
                "type": ["integer", "null"],
                "description": "position in the batch; null when the body itself is bad",
            },
            "reason": {"type": "string", "pattern": "^[a-z][a-z0-9_]*$"},
            "field": {"type": ["string", "null"]},
            "message": {"type": "string"},
        },
    },
    "Health": {
        "type": "object",
        "required": ["status"],
        "properties": {"status": {"const": "ok"}},
    },
    "Ready": {
        "type": "object",
        "required": ["ready", "status"],
        "properties": {"ready": {"type": "boolean"}, "status": {"type": "string"}},
    },
}
