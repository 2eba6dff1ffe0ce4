"""Retry policy, pure: what an attempt's outcome means and when to try again.

Success is 2xx only. Timeouts, connection errors, 408, 425, 429 and 5xx are
worth another try; redirects are a configuration error (we never follow
them, the URL is wrong); 410 and the other 4xx will not get better by
waiting, so they go straight to the dead letters. Delays follow the
configured schedule with +-jitter so a recovering endpoint is not hit by a
synchronized wave; Retry-After on 429/503 wins, clamped.
"""

from __future__ import annotations

import enum
import random
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

from nudgeflow.config.destinations import DeliverySettings


@dataclass(frozen=True, slots=True)
class AttemptResult:
    """One HTTP attempt: a status, or an error class when there was no response."""

    status: int | None
    error_class: str | None  # "timeout", "connection", "ssrf", "bad_url", ...
    latency_s: float
    retry_after_s: float | None = None

    @property
    def status_class(self) -> str:
        """Metric label: 2xx/3xx/4xx/5xx, or the error class."""
        if self.status is not None:
            return f"{self.status // 100}xx"
        return self.error_class or "error"

    @property
    def label(self) -> str:
        """Audit/header text: the status code or the error class."""
        return str(self.status) if self.status is not None else (self.error_class or "error")


class Outcome(enum.Enum):
    DELIVERED = "delivered"
    RETRY = "retry"
    DEAD = "dead"
    DEFERRED = "deferred"  # no call made: the circuit is open; waits for its probe


@dataclass(frozen=True, slots=True)
class Verdict:
    outcome: Outcome
    reason: str  # "ok", "status_503", "timeout", "redirect", "gone", "status_404", "ssrf"...


_RETRYABLE_STATUS = frozenset({408, 425, 429})
_RETRYABLE_ERRORS = frozenset({"timeout", "connection", "circuit_open", "error"})
# Refused before any byte left: not the endpoint's fault, so not the breaker's business.
NO_CALL_ERRORS = frozenset({"ssrf", "bad_url", "unknown_destination"})


def classify(result: AttemptResult) -> Verdict:
    status = result.status
    if status is None:
        error = result.error_class or "error"
        if error in _RETRYABLE_ERRORS:
            return Verdict(Outcome.RETRY, error)
        return Verdict(Outcome.DEAD, error)  # e.g. ssrf, bad_url: retrying will not help
    if 200 <= status < 300:
        return Verdict(Outcome.DELIVERED, "ok")
    if 300 <= status < 400:
        return Verdict(Outcome.DEAD, "redirect")
    if status in _RETRYABLE_STATUS or status >= 500:
        return Verdict(Outcome.RETRY, f"status_{status}")
    if status == 410:
        return Verdict(Outcome.DEAD, "gone")
    return Verdict(Outcome.DEAD, f"status_{status}")


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """Retry-After as delta-seconds or an HTTP-date -> seconds from now (>= 0)."""
    if not value:
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())


@dataclass(frozen=True)
class RetryPolicy:
    delays_s: tuple[float, ...]
    max_retry_after_s: float
    jitter: float = 0.2

    @classmethod
    def from_settings(cls, settings: DeliverySettings) -> RetryPolicy:
        return cls(settings.retry_delays_s, settings.max_retry_after_s, settings.jitter)

    @property
    def max_attempts(self) -> int:
        return len(self.delays_s) + 1

    @property
    def span_s(self) -> float:
        """The least time from the first attempt to the last (every delay at the bottom
        of its jitter, no Retry-After)."""
        return sum(self.delays_s) * (1 - self.jitter)

    def next_delay(
        self, attempt: int, retry_after_s: float | None, rng: random.Random
    ) -> float | None:
        """Delay before attempt `attempt + 1`, or None when `attempt` was the last."""
        if attempt >= self.max_attempts:
            return None
        if retry_after_s is not None:
            return min(max(retry_after_s, 0.0), self.max_retry_after_s)
        base = self.delays_s[attempt - 1]
        return base * (1 + rng.uniform(-self.jitter, self.jitter))

    def tier_for(self, delay_s: float) -> int:
        """Retry topic tier (0-based, tier i holds ~delays_s[i]) for a delay: the first
        tier whose delays reach it.

        Records in a tier then have roughly the same delay, so they come due in
        log order and a tier consumer only ever waits on its head record.
        """
        for index, base in enumerate(self.delays_s):
            if delay_s <= base * (1 + self.jitter):
                return index
        return len(self.delays_s) - 1
