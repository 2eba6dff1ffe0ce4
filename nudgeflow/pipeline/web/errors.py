"""JSON error responses: every refusal tells the caller what is wrong."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aiohttp import web


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
