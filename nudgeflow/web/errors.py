"""JSON error responses: every refusal tells the caller what is wrong."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def json_error(
    status: int,
    message: str,
    *,
    code: str,
    errors: list[dict[str, Any]] | None = None,
    headers: Mapping[str, str] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> web.Response:
    """`{"error": message, "code": code, "errors": [...]}` with the given status.

    `message` repeats `error` because Segment's SDKs log `code` and `message`.
    """
    body: dict[str, Any] = {"error": message, "code": code, "message": message}
    if errors is not None:
        body["errors"] = errors
    if extra:
        body.update(extra)
    return web.json_response(body, status=status, headers=headers)


_HTTP_CODES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "too_large",
    415: "unsupported_media_type",
}
_KEPT_HEADERS = ("Allow", "WWW-Authenticate", "Retry-After")


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """aiohttp's own refusals (404, 405, a non-upgrade request to a WebSocket route, a
    body that cannot be inflated) as JSON bodies too, and never a 500 for a bad body."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400 or exc.content_type == "application/json":
            raise
        kept = {h: exc.headers[h] for h in _KEPT_HEADERS if h in exc.headers}
        message = (exc.text or exc.reason).strip()
        return json_error(
            exc.status, message, code=_HTTP_CODES.get(exc.status, "http_error"), headers=kept
        )
    except web.RequestPayloadError as exc:
        return json_error(400, f"the body could not be read: {exc}", code="unreadable_body")
