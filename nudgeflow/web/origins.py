"""Browser origins: which pages may call the worker (issue 21.6), and CORS (issue 19.7).

Found: with no token, a page on any other origin could post events (a `text/plain`
`fetch` needs no preflight), open `/ws/events` and read the live feed on `/ws/console`.
A browser says where a request comes from in `Origin` (always on POST and on a
WebSocket handshake), so:

- A request with an `Origin` is refused (403, `origin_not_allowed`) unless the origin
  is the worker's own (the console it serves) or listed in `allowed_origins`. The
  worker's own origin is `http://<Host header>` when that host is an IP address,
  `localhost`, `web_host` or the host of `advertised_url`: a DNS-rebinding page has
  a name of its own in Host, so it is not "own". A request without `Origin` (curl,
  SDKs, Prometheus, orchestrators) is not a browser's and is not concerned.
- An allowed origin gets CORS on `POST /events` and `/v1/*`: the preflight (OPTIONS
  with `Access-Control-Request-Method`) is answered 204 with the methods and headers
  (`Authorization` included: the API token is still required where configured, and
  a preflight never carries it), and every answer carries
  `Access-Control-Allow-Origin` so the page can read it, errors included. No
  cookies are involved, so no `Allow-Credentials`.
- `text/plain` bodies are refused on `POST /events` (web/ingest.py): it is the
  content type a page may send cross-origin without asking; the Segment routes keep
  it for analytics.js, whose pages must be on an allowed origin.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

from aiohttp import web
from aiohttp.typedefs import Middleware
from yarl import URL

from nudgeflow.observability import metrics
from nudgeflow.web.errors import Handler, json_error

CORS_METHODS = "POST, OPTIONS"
CORS_HEADERS = "Authorization, Content-Type, Content-Encoding"
EXPOSED_HEADERS = "Retry-After, WWW-Authenticate"
MAX_AGE_S = "600"


def cors_route(path: str) -> bool:
    return path == "/events" or path.startswith("/v1/")


@dataclass(frozen=True)
class OriginPolicy:
    allowed: frozenset[str]  # normalised: lowercase scheme://host[:port]
    own_names: frozenset[str]  # host names that are this worker, besides IPs and localhost

    @classmethod
    def of(cls, allowed: Iterable[str], own_urls: Iterable[str | None]) -> OriginPolicy:
        names = {URL(u).host or "" for u in own_urls if u}
        return cls(frozenset(o.lower().rstrip("/") for o in allowed), frozenset(names - {""}))

    def allows(self, request: web.Request, origin: str) -> bool:
        return origin in self.allowed or self.is_own(request, origin)

    def is_own(self, request: web.Request, origin: str) -> bool:
        """The page was served by this worker, under a name that cannot be rebound."""
        if origin != f"{request.scheme}://{request.host}".lower():
            return False
        name = URL(origin).host or ""
        if name == "localhost" or name in self.own_names:
            return True
        try:
            ipaddress.ip_address(name.strip("[]"))
        except ValueError:
            return False
        return True


def origin_guard(policy: OriginPolicy) -> Middleware:
    """Middleware: refuse foreign browser requests; answer and annotate CORS."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        origin = request.headers.get("Origin")
        if origin is None:
            return await handler(request)
        origin = origin.lower()
        cors = cors_route(request.path) and origin in policy.allowed
        if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
            return _preflight(origin) if cors else _refused(origin)
        if not policy.allows(request, origin):
            return _refused(origin)
        response = await handler(request)
        if cors and not response.prepared:
            response.headers.update(
                {
                    "Access-Control-Allow-Origin": origin,
                    "Access-Control-Expose-Headers": EXPOSED_HEADERS,
                    "Vary": "Origin",
                }
            )
        return response

    return middleware


def _preflight(origin: str) -> web.Response:
    return web.Response(
        status=204,
        headers={
            "Access-Control-Allow-Origin": origin,
            "Access-Control-Allow-Methods": CORS_METHODS,
            "Access-Control-Allow-Headers": CORS_HEADERS,
            "Access-Control-Max-Age": MAX_AGE_S,
            "Vary": "Origin",
        },
    )


def _refused(origin: str) -> web.Response:
    metrics.http_origin_refused.inc()
    shown = origin if len(origin) <= 100 else origin[:97] + "..."
    return json_error(
        403,
        f"requests from pages on {shown} are not allowed; list the origin in the "
        "allowed_origins setting",
        code="origin_not_allowed",
    )
