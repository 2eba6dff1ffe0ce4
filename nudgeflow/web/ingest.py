"""HTTP, Segment and WebSocket ingestion (DESIGN §2).

A call succeeds (202 `{"accepted": N}`) only after the sink reports that Kafka
acknowledged every event; a bad event refuses the whole body (400, or 413 for
size) with one entry per bad index and field, so nothing is half-accepted.

Bodies: `application/json` and `application/*+json` are read as JSON, as is a
body without a Content-Type (which aiohttp reports as `application/octet-stream`);
the Segment routes also read `text/plain` (what analytics.js sends, from a page
that must be on an allowed origin: web/origins.py); anything else, e.g. a form
post or `text/plain` on `POST /events` (what a foreign page could send without a
preflight), is 415. `Content-Encoding: gzip`/`deflate` bodies are inflated
by aiohttp, and the size limit applies to the inflated bytes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec
from aiohttp import WSMsgType, web

from nudgeflow.events.model import Event
from nudgeflow.events.parse import BatchError, EventError, EventLimits, parse_batch, parse_event
from nudgeflow.events.segment import (
    KNOWN_ID,
    MERGE_EVENT,
    parse_segment_batch,
    parse_segment_call,
)
from nudgeflow.observability import metrics
from nudgeflow.types.sinks import EventSink, SinkUnavailable
from nudgeflow.web.auth import (
    basic_username,
    bearer_token,
    token_ok,
    unauthorized,
    write_key_ok,
)
from nudgeflow.web.errors import json_error

log = logging.getLogger(__name__)

UNAVAILABLE = "event store unavailable, retry later"
RETRY_AFTER_S = "5"
_JSON_TYPES = frozenset({"application/json", "application/octet-stream"})
_SEGMENT_TYPES = _JSON_TYPES | {"text/plain"}
_decode_json = msgspec.json.Decoder()


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(frozen=True)
class IngestOptions:
    api_token: str | None = None
    segment_write_keys: frozenset[str] = frozenset()
    max_body_bytes: int = 1024 * 1024
    max_batch: int = 1000
    limits: EventLimits = field(default_factory=EventLimits)
    clock: Callable[[], int] = wall_clock_ms
    body_timeout_s: float = 30.0  # a body trickled in slower than this gets a 408


class _BodyTooLarge(Exception):
    pass


class RecentMerges:
    """The identity-merge requests this worker stored lately (events/segment.py): analytics.js
    sends `anonymousId` with every call of a signed-in user, and the first request per pair
    does the merge; the rest would only cost a record each. Bounded, and forgotten after
    `ttl_ms`, so a pair is asked again now and then (a request is idempotent)."""

    def __init__(self, size: int = 10_000, ttl_ms: int = 600_000) -> None:
        self.size, self.ttl_ms = size, ttl_ms
        self._pairs: OrderedDict[tuple[str, Any], int] = OrderedDict()

    def fresh(self, events: list[Event], now: int) -> list[Event]:
        """`events` without the merge requests for a pair stored within the last ttl."""
        return [e for e in events if e.type != MERGE_EVENT or not self._recent(_pair(e), now)]

    def _recent(self, pair: tuple[str, Any], now: int) -> bool:
        at = self._pairs.get(pair)
        return at is not None and now - at < self.ttl_ms

    def remember(self, events: list[Event], now: int) -> None:
        for event in events:
            if event.type == MERGE_EVENT:
                self._pairs[_pair(event)] = now
                self._pairs.move_to_end(_pair(event))
        while len(self._pairs) > self.size:
            self._pairs.popitem(last=False)


def _pair(event: Event) -> tuple[str, Any]:
    return event.user_id, event.properties.get(KNOWN_ID)


def add_ingest_routes(app: web.Application, sink: EventSink, options: IngestOptions) -> None:
    """Mount `POST /events`, the Segment `/v1/*` routes and `GET /ws/events` on `app`."""
    views = _IngestViews(sink, options)
    app.router.add_post("/events", views.post_events)
    for path, call in (
        ("/v1/track", "track"),
        ("/v1/t", "track"),
        ("/v1/identify", "identify"),
        ("/v1/i", "identify"),
        ("/v1/page", "page"),
        ("/v1/p", "page"),
        ("/v1/screen", "screen"),
        ("/v1/s", "screen"),
        ("/v1/alias", "alias"),
        ("/v1/a", "alias"),
    ):
        app.router.add_post(path, views.segment_call(call))
    app.router.add_post("/v1/batch", views.segment_batch)
    app.router.add_post("/v1/b", views.segment_batch)
    app.router.add_get("/ws/events", views.websocket)


class _IngestViews:
    def __init__(self, sink: EventSink, options: IngestOptions) -> None:
        self.sink = sink
        self.options = options
        self.merges = RecentMerges()  # Segment calls' identity-merge requests, lately stored

    # -- POST /events ---------------------------------------------------------------

    async def post_events(self, request: web.Request) -> web.StreamResponse:
        opts = self.options
        if not token_ok(request, opts.api_token):
            return unauthorized()
        body_or_error = await self._read_body(request, "http")
        if isinstance(body_or_error, web.Response):
            return body_or_error
        try:
            events = parse_batch(
                body_or_error, now_ms=opts.clock(), limits=opts.limits, max_batch=opts.max_batch
            )
        except BatchError as exc:
            return _refused(exc, "http")
        return await self._store(events, "http")

    # -- Segment ----------------------------------------------------------------------

    def segment_call(self, call: str) -> Callable[[web.Request], Any]:
        async def handler(request: web.Request) -> web.StreamResponse:
            parsed = await self._segment_body(request)
            if isinstance(parsed, web.Response):
                return parsed
            try:
                events = parse_segment_call(
                    parsed, call=call, now_ms=self.options.clock(), limits=self.options.limits
                )
            except EventError as exc:
                return _refused(BatchError([(None, exc)]), "segment")
            extra: dict[str, Any] = {"success": True}
            if not events:  # an alias to itself: nothing to do (events/segment.py)
                extra["ignored"] = [{"index": 0, "type": call, "reason": "self_alias"}]
            return await self._store(events, "segment", extra=extra)

        return handler

    async def segment_batch(self, request: web.Request) -> web.StreamResponse:
        parsed = await self._segment_body(request)
        if isinstance(parsed, web.Response):
            return parsed
        try:
            batch = parse_segment_batch(
                parsed,
                now_ms=self.options.clock(),
                limits=self.options.limits,
                max_batch=self.options.max_batch,
            )
        except BatchError as exc:
            return _refused(exc, "segment")
        extra: dict[str, Any] = {"success": True}
        if batch.ignored:
            extra["ignored"] = batch.ignored
        return await self._store(batch.events, "segment", extra=extra)

    async def _segment_body(self, request: web.Request) -> Any:
        """The decoded body, or the error response; checks the write key on the way."""
        opts = self.options
        header_key = basic_username(request) or bearer_token(request)
        if header_key is not None and not write_key_ok(
            header_key, opts.segment_write_keys, opts.api_token
        ):
            return unauthorized("Basic")
        body = await self._read_body(request, "segment")
        if isinstance(body, web.Response):
            return body
        try:
            parsed = _decode_json.decode(body)
        except (msgspec.DecodeError, msgspec.ValidationError, RecursionError) as exc:
            if header_key is None and not write_key_ok(
                None, opts.segment_write_keys, opts.api_token
            ):
                return unauthorized("Basic")
            return _refused(BatchError([(None, _json_error(exc))]), "segment")
        if header_key is None:
            body_key = parsed.get("writeKey") if isinstance(parsed, dict) else None
            if not write_key_ok(
                body_key if isinstance(body_key, str) else None,
                opts.segment_write_keys,
                opts.api_token,
            ):
                return unauthorized("Basic")
        return parsed

    # -- WebSocket --------------------------------------------------------------------

    async def websocket(self, request: web.Request) -> web.StreamResponse:
        opts = self.options
        if not token_ok(request, opts.api_token, allow_query=True):
            return unauthorized()
        ws = web.WebSocketResponse(max_msg_size=opts.max_body_bytes, heartbeat=30.0)
        await ws.prepare(request)
        seq = 0
        async for msg in ws:
            if msg.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
                continue
            seq += 1
            ack = await self._ws_event(msg.data, seq)
            try:
                await ws.send_json(ack)
            except ConnectionResetError:
                break
        return ws

    async def _ws_event(self, data: str | bytes, seq: int) -> dict[str, Any]:
        metrics.events_received.labels(source="ws").inc()
        try:
            event = parse_event(data, now_ms=self.options.clock(), limits=self.options.limits)
        except EventError as exc:
            metrics.events_rejected.labels(source="ws", reason=exc.reason).inc()
            return {"ok": False, "seq": seq, "errors": [exc.to_dict()]}
        try:
            await self.sink.send([event])
        except SinkUnavailable:
            metrics.events_rejected.labels(source="ws", reason="store_unavailable").inc()
            return {
                "ok": False,
                "seq": seq,
                "retry": True,
                "event_id": event.event_id,
                "errors": [{"reason": "store_unavailable", "field": None, "message": UNAVAILABLE}],
            }
        return {"ok": True, "seq": seq, "event_id": event.event_id}

    # -- shared -----------------------------------------------------------------------

    async def _read_body(self, request: web.Request, source: str) -> bytes | web.Response:
        types = _SEGMENT_TYPES if source == "segment" else _JSON_TYPES
        if request.content_type not in types and not request.content_type.endswith("+json"):
            metrics.events_received.labels(source=source).inc()
            metrics.events_rejected.labels(source=source, reason="unsupported_media_type").inc()
            return json_error(
                415,
                f"send JSON (Content-Type: application/json), not {request.content_type}",
                code="unsupported_media_type",
            )
        try:
            async with asyncio.timeout(self.options.body_timeout_s):
                return await _read_limited(request, self.options.max_body_bytes)
        except TimeoutError:
            metrics.events_received.labels(source=source).inc()
            metrics.events_rejected.labels(source=source, reason="body_timeout").inc()
            refused = json_error(
                408,
                f"the body did not arrive within {self.options.body_timeout_s:g} s",
                code="body_timeout",
            )
            refused.force_close()
            return refused
        except _BodyTooLarge:
            metrics.events_received.labels(source=source).inc()
            metrics.events_rejected.labels(source=source, reason="too_large").inc()
            return json_error(
                413,
                f"body is larger than {self.options.max_body_bytes} bytes; "
                "send fewer events per request",
                code="too_large",
            )

    async def _store(
        self, events: list[Event], source: str, *, extra: dict[str, Any] | None = None
    ) -> web.Response:
        metrics.events_received.labels(source=source).inc(len(events))
        now = self.options.clock()
        if source == "segment":
            events = self.merges.fresh(events, now)
        if events:
            try:
                await self.sink.send(events)
            except SinkUnavailable:
                log.warning("event store unavailable; refused %d %s event(s)", len(events), source)
                metrics.events_rejected.labels(source=source, reason="store_unavailable").inc(
                    len(events)
                )
                return json_error(
                    503,
                    UNAVAILABLE,
                    code="store_unavailable",
                    headers={"Retry-After": RETRY_AFTER_S},
                )
        if source == "segment":
            self.merges.remember(events, now)
        return web.json_response({"accepted": len(events), **(extra or {})}, status=202)


async def _read_limited(request: web.Request, limit: int) -> bytes:
    """Read at most `limit` (inflated) bytes, without buffering a too-large body."""
    if request.content_length is not None and request.content_length > limit:
        raise _BodyTooLarge
    chunks: list[bytes] = []
    total = 0
    async for chunk in request.content.iter_chunked(64 * 1024):
        total += len(chunk)
        if total > limit:
            raise _BodyTooLarge
        chunks.append(chunk)
    return b"".join(chunks)


def _json_error(exc: BaseException) -> EventError:
    if isinstance(exc, RecursionError):
        return EventError("too_deep", "body is nested too deeply")
    if "UTF-8" in str(exc):
        return EventError("invalid_encoding", "body is not valid UTF-8")
    return EventError("invalid_json", f"body is not valid JSON: {exc}")


def _refused(exc: BatchError, source: str) -> web.Response:
    reasons = exc.reasons
    metrics.events_received.labels(source=source).inc(exc.total or 1)
    for reason in reasons:
        metrics.events_rejected.labels(source=source, reason=reason).inc()
    status = 413 if all(r == "too_large" for r in reasons) else 400
    body = exc.to_dict()
    return json_error(
        status, body["error"], code="invalid_events", errors=body["errors"], extra={"accepted": 0}
    )
