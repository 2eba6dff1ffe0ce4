"""The HTTP side of a webhook attempt.

One aiohttp session per worker (plus a second, unguarded one only for
destinations with `allow_private`), with no connection limit of its own: each
destination's concurrency and rate are held by its gate (delivery/gate.py), so one
destination's load never takes another's connections. Redirects are never followed.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime

import aiohttp

from nudgeflow.config.addresses import ForbiddenAddress, check_literal_url
from nudgeflow.config.destinations import Destination
from nudgeflow.delivery.retry import AttemptResult, parse_retry_after
from nudgeflow.delivery.signing import destination_secrets, webhook_headers
from nudgeflow.delivery.ssrf import GuardedResolver
from nudgeflow.observability import metrics

USER_AGENT = "nudgeflow-webhooks/0.1"
_RETRY_AFTER_STATUSES = frozenset({429, 503})


def _forbidden_in(exc: BaseException) -> ForbiddenAddress | None:
    seen: BaseException | None = exc
    for _ in range(5):
        if seen is None:
            return None
        if isinstance(seen, ForbiddenAddress):
            return seen
        inner = getattr(seen, "os_error", None)
        seen = inner if isinstance(inner, BaseException) else seen.__cause__
    return None


class Sender:
    """Makes attempts; never raises for HTTP or network trouble, it reports it."""

    def __init__(
        self, *, user_agent: str = USER_AGENT, wall_clock: Callable[[], float] = time.time
    ) -> None:
        self._user_agent = user_agent
        self._wall_clock = wall_clock
        self._guarded: aiohttp.ClientSession | None = None
        self._open: aiohttp.ClientSession | None = None

    def _session(self, allow_private: bool) -> aiohttp.ClientSession:
        if allow_private:
            if self._open is None:
                self._open = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
            return self._open
        if self._guarded is None:
            connector = aiohttp.TCPConnector(limit=0, resolver=GuardedResolver())
            self._guarded = aiohttp.ClientSession(connector=connector)
        return self._guarded

    async def close(self) -> None:
        for session in (self._guarded, self._open):
            if session is not None:
                await session.close()
        self._guarded = self._open = None

    async def attempt(
        self, name: str, dest: Destination, msg_id: str, body: bytes
    ) -> AttemptResult:
        """One POST, now: the caller holds the destination's gate pass."""
        result = await self._post(dest, msg_id, body)
        metrics.delivery_attempts.labels(destination=name, status_class=result.status_class).inc()
        metrics.delivery_attempt_duration.labels(destination=name).observe(result.latency_s)
        return result

    async def _post(self, dest: Destination, msg_id: str, body: bytes) -> AttemptResult:
        url = str(dest.url)
        now = self._wall_clock()
        headers = {
            **dest.headers,
            "content-type": "application/json",
            "user-agent": self._user_agent,
            **webhook_headers(destination_secrets(dest), msg_id, int(now), body),
        }
        started = time.perf_counter()

        def done(
            status: int | None, error: str | None, retry_after: float | None = None
        ) -> AttemptResult:
            return AttemptResult(status, error, time.perf_counter() - started, retry_after)

        try:
            check_literal_url(url, dest.allow_private)
            session = self._session(dest.allow_private)
            async with session.post(
                url,
                data=body,
                headers=headers,
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=dest.timeout),
            ) as resp:
                retry_after = None
                if resp.status in _RETRY_AFTER_STATUSES:
                    retry_after = parse_retry_after(
                        resp.headers.get("Retry-After"), datetime.fromtimestamp(now, tz=UTC)
                    )
                return done(resp.status, None, retry_after)
        except ForbiddenAddress:
            return done(None, "ssrf")
        except TimeoutError:
            return done(None, "timeout")
        except aiohttp.InvalidURL:
            return done(None, "bad_url")
        except (aiohttp.ClientError, OSError) as exc:
            return done(None, "ssrf" if _forbidden_in(exc) else "connection")
