"""GET /r/<token> and GET /o/<token>.gif: tracked clicks and opens (issue 19.5).

A token (engine/links.py) is checked before anything it says is used: a bad, forged or
truncated one gets 400, an expired one 410, and neither is redirected anywhere (no open
redirect). A good one becomes a `message_clicked` / `message_opened` event for its user on
the normal ingestion path (`<prefix>.events`, the same sink as POST /events), so the
engine attributes it to the send's rule, step and variant like a producer's own event.
The event id is derived from the send (and the link), so repeated clicks on one link, or
a pixel loaded by every device, count once per send (the engine's per-user dedupe).

The person clicking always gets their page: if Kafka cannot take the event in time the
redirect still happens, and the loss is logged and counted
(`nudgeflow_events_rejected_total{source="tracking",reason="unavailable"}`).
No token is needed (the signature is the credential); tokens are never logged.
"""

from __future__ import annotations

import base64
import hashlib
import logging

from aiohttp import web

from nudgeflow.engine.links import CLICK, OPEN, Link, LinkError, LinkSigner
from nudgeflow.events.parse import EventError, EventLimits, parse_event
from nudgeflow.observability import metrics
from nudgeflow.observability.clock import now_ms
from nudgeflow.types.sinks import EventSink, SinkUnavailable
from nudgeflow.web.errors import json_error

log = logging.getLogger(__name__)

# The smallest transparent GIF (43 bytes).
PIXEL = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")
_NO_STORE = {"Cache-Control": "no-store, private", "Referrer-Policy": "no-referrer"}


def engagement_event(link: Link, at_ms: int) -> dict[str, object]:
    """The event a followed link or a loaded pixel records."""
    if link.kind == CLICK:
        digest = hashlib.blake2b(link.url.encode(), digest_size=6).hexdigest()
        kind, event_id = "message_clicked", f"nf-click-{link.trigger_id}-{digest}"
    else:
        kind, event_id = "message_opened", f"nf-open-{link.trigger_id}"
    return {
        "event_id": event_id,
        "user_id": link.user_id,
        "type": kind,
        "ts": at_ms,
        "properties": link.event_properties(),
    }


class Tracking:
    def __init__(self, signer: LinkSigner, sink: EventSink, limits: EventLimits) -> None:
        self.signer = signer
        self.sink = sink
        self.limits = limits

    def _check(self, token: str, kind: str) -> Link | web.Response:
        try:
            return self.signer.verify(token, kind, now_ms())
        except LinkError as exc:
            code = "link_expired" if exc.status == 410 else "bad_link"
            return json_error(exc.status, exc.reason, code=code, headers=_NO_STORE)

    async def _record(self, link: Link) -> None:
        at = now_ms()
        try:
            event = parse_event(engagement_event(link, at), now_ms=at, limits=self.limits)
            await self.sink.send([event])
            metrics.events_received.labels(source="tracking").inc()
        except (EventError, SinkUnavailable) as exc:
            reason = exc.reason if isinstance(exc, EventError) else "unavailable"
            metrics.events_rejected.labels(source="tracking", reason=reason).inc()
            log.warning("a tracked %s was not recorded: %s", link.kind, exc)

    async def click(self, request: web.Request) -> web.StreamResponse:
        link = self._check(request.match_info["token"], CLICK)
        if isinstance(link, web.Response):
            return link
        await self._record(link)
        return web.Response(status=302, headers={"Location": link.url, **_NO_STORE})

    async def open(self, request: web.Request) -> web.StreamResponse:
        link = self._check(request.match_info["token"], OPEN)
        if isinstance(link, web.Response):
            return link
        await self._record(link)
        return web.Response(body=PIXEL, content_type="image/gif", headers=_NO_STORE)


def add_tracking_routes(
    app: web.Application, signer: LinkSigner, sink: EventSink, limits: EventLimits
) -> None:
    tracking = Tracking(signer, sink, limits)
    app.router.add_get("/r/{token}", tracking.click)
    app.router.add_get("/o/{token}.gif", tracking.open)
