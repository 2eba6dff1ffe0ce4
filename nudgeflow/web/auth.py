"""Bearer-token and Segment write-key checks, for ingestion and admin routes.

Comparisons use `hmac.compare_digest` so response time does not leak how much
of a token matched. A WebSocket client in a browser cannot set headers, so the
token is also read from the `access_token` query parameter (RFC 6750 §2.3) when
`allow_query` is set; keep that to the WebSocket route.
"""

from __future__ import annotations

import binascii
import functools
import hmac
from base64 import b64decode
from collections.abc import Awaitable, Callable, Collection

from aiohttp import web

from nudgeflow.web.errors import json_error

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def tokens_match(given: str | None, expected: str) -> bool:
    if given is None:
        return False
    return hmac.compare_digest(given.encode("utf-8", "replace"), expected.encode("utf-8"))


def bearer_token(request: web.Request, *, allow_query: bool = False) -> str | None:
    """The token from `Authorization: Bearer …` (or `?access_token=` if allowed)."""
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    if allow_query:
        return request.query.get("access_token") or None
    return None


def basic_username(request: web.Request) -> str | None:
    """The user name of HTTP Basic auth (Segment puts its write key there)."""
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        return None
    return decoded.partition(":")[0]


def token_ok(request: web.Request, token: str | None, *, allow_query: bool = False) -> bool:
    """True when no token is configured or the request carries it."""
    return token is None or tokens_match(bearer_token(request, allow_query=allow_query), token)


def unauthorized(scheme: str = "Bearer") -> web.Response:
    return json_error(
        401,
        "missing or invalid credentials",
        code="unauthorized",
        headers={"WWW-Authenticate": f'{scheme} realm="nudgeflow"'},
    )


def require_token(token: str | None, *, allow_query: bool = False) -> Callable[[Handler], Handler]:
    """Decorator: 401 unless the request carries `token` (no-op when token is None)."""

    def decorate(handler: Handler) -> Handler:
        if token is None:
            return handler

        @functools.wraps(handler)
        async def guarded(request: web.Request) -> web.StreamResponse:
            if not token_ok(request, token, allow_query=allow_query):
                return unauthorized()
            return await handler(request)

        return guarded

    return decorate


def write_key_ok(given: str | None, write_keys: Collection[str], token: str | None) -> bool:
    """Segment write-key rule.

    With write keys configured, the key must be one of them (or the API token).
    With none configured, any key is accepted unless an API token is set, in
    which case the key must be that token: ingestion never opens up just
    because the Segment routes use Basic auth.
    """
    if given is not None and token is not None and tokens_match(given, token):
        return True
    if write_keys:
        return given is not None and any(tokens_match(given, key) for key in write_keys)
    return token is None
