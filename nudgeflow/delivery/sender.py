"""The HTTP side of a webhook attempt.

One aiohttp session per worker (plus a second, unguarded one only for
destinations with `allow_private`), and per destination a semaphore
(`concurrency`) and a rate limiter (`rate_limit`), so one destination's
load never takes another's connections. Redirects are never followed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime

import aiohttp
from aiolimiter import AsyncLimiter

from nudgeflow.config.addresses import ForbiddenAddress, check_literal_url
from nudgeflow.config.destinations import Destination, rate_per_s
from nudgeflow.delivery.retry import AttemptResult, parse_retry_after
from nudgeflow.delivery.signing import destination_secrets, webhook_headers
from nudgeflow.delivery.ssrf import GuardedResolver
from nudgeflow.observability import metrics

USER_AGENT = "nudgeflow-webhooks/0.1"
_RETRY_AFTER_STATUSES = frozenset({429, 503})


def _limiter(rate_limit: str) -> AsyncLimiter:
    count, period = rate_per_s(rate_limit)
    if count < 1:  # AsyncLimiter cannot take 1 unit from a bucket smaller than 1
        return AsyncLimiter(1, period / count)
    return AsyncLimiter(count, period)


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
        self._semaphores: dict[str, asyncio.Semaphore] = {}
        self._limiters: dict[str, AsyncLimiter | None] = {}

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

    def _gates(self, name: str, dest: Destination) -> tuple[asyncio.Semaphore, AsyncLimiter | None]:
        if name not in self._semaphores:
            self._semaphores[name] = asyncio.Semaphore(dest.concurrency)
            self._limiters[name] = _limiter(dest.rate_limit) if dest.rate_limit else None
        return self._semaphores[name], self._limiters[name]

    async def attempt(
        self,
        name: str,
        dest: Destination,
        msg_id: str,
        body: bytes,
        admit: Callable[[], bool] | None = None,
    ) -> AttemptResult:
        """`admit` is asked once a slot is free (the circuit may have opened meanwhile)."""
        semaphore, limiter = self._gates(name, dest)
        async with semaphore:
            if limiter is not None:
                await limiter.acquire()
            if admit is not None and not admit():
                return AttemptResult(None, "circuit_open", 0.0)
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
