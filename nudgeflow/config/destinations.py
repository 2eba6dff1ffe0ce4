"""Destinations and delivery policy, as written in nudgeflow.yaml (DESIGN §4).

Secrets are `whsec_…` strings, normally `${ENV_VAR}` references resolved when
the file is loaded; they are held as SecretStr so they never reach logs.
"""

from __future__ import annotations

import re

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    HttpUrl,
    SecretStr,
    field_validator,
    model_validator,
)

from nudgeflow.config.addresses import ForbiddenAddress, check_literal_url
from nudgeflow.config.fields import Name

_RATE = re.compile(r"^(\d+(?:\.\d+)?)/(s|m|h)$")
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h|d)$")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def duration_s(text: str) -> float:
    """`200ms`, `5s`, `5m`, `2h`, `7d` -> seconds (ms allowed so tests can shorten)."""
    m = _DURATION.match(text.strip())
    if not m:
        raise ValueError(f"duration {text!r}: expected e.g. 500ms, 30s, 15m, 2h, 7d")
    return float(m.group(1)) * _UNIT_S[m.group(2)]


def rate_per_s(text: str) -> tuple[float, float]:
    """`25/s` -> (25, 1.0): (max requests, per seconds)."""
    m = _RATE.match(text)
    if not m:
        raise ValueError(f"rate_limit {text!r}: expected N/s, N/m or N/h, e.g. 25/s")
    return float(m.group(1)), _UNIT_S[m.group(2)]


class Destination(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    url: HttpUrl
    secret: SecretStr | None = None
    old_secrets: list[SecretStr] = []  # still signed with during a rotation
    headers: dict[str, str] = {}
    timeout: float = Field(10.0, gt=0, le=120)
    rate_limit: str | None = None  # e.g. "25/s"
    concurrency: int = Field(8, ge=1, le=256)
    allow_private: bool = False
    # consent (DESIGN §3.2): `marketing` (the default) or any category is subject to the
    # user's subscription; `transactional` is sent whatever it is
    category: Name = "marketing"

    @field_validator("rate_limit")
    @classmethod
    def _rate(cls, v: str | None) -> str | None:
        if v is not None:
            rate_per_s(v)
        return v

    @field_validator("secret")
    @classmethod
    def _whsec(cls, v: SecretStr | None) -> SecretStr | None:
        if v is not None and not v.get_secret_value().startswith("whsec_"):
            raise ValueError("secret must be a Standard Webhooks secret starting with whsec_")
        return v

    @field_validator("old_secrets")
    @classmethod
    def _old_whsec(cls, v: list[SecretStr]) -> list[SecretStr]:
        for s in v:
            if not s.get_secret_value().startswith("whsec_"):
                raise ValueError("old_secrets must be Standard Webhooks secrets (whsec_...)")
        return v

    @model_validator(mode="after")
    def _no_private_literal(self) -> Destination:
        """A URL naming a private IP is refused when the file is loaded (SSRF guard)."""
        try:
            check_literal_url(str(self.url), self.allow_private)
        except ForbiddenAddress as exc:
            raise ValueError(str(exc)) from None
        return self


class DeliverySettings(BaseModel):
    """Retries, the circuit breaker and the dedupe horizon (README, "Delivery").

    The breaker follows Convoy's model: a destination's circuit opens when, within the
    last `breaker_window`, at least `breaker_min_calls` calls were made and at least
    `breaker_failure_ratio` of them failed; after `breaker_reset` one probe goes out;
    its success closes the circuit and the allowed concurrency ramps up from one.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    retry_schedule: list[str] = ["5s", "5m", "30m", "2h", "5h", "10h", "10h"]
    max_retry_after: str = "1h"
    breaker_window: str = "60s"  # the sliding window the failure ratio is taken over
    breaker_min_calls: int = Field(10, ge=1)  # fewer calls in the window never open it
    breaker_failure_ratio: float = Field(0.7, gt=0, le=1)
    breaker_reset: str = "2s"  # open -> half-open (one probe) after this long
    # Before the ratio model this was "consecutive failures"; still accepted, as the
    # minimum number of calls (so old files keep loading).
    breaker_failures: int | None = Field(None, ge=1)
    jitter: float = Field(0.2, ge=0, lt=1)  # +-20% on every scheduled delay
    dedupe_margin: str = "1h"  # delivered marks live this long past the retry horizon

    @field_validator("retry_schedule")
    @classmethod
    def _schedule(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("retry_schedule needs at least one delay")
        for d in v:
            duration_s(d)
        return v

    @field_validator("max_retry_after", "breaker_reset", "breaker_window", "dedupe_margin")
    @classmethod
    def _duration(cls, v: str) -> str:
        duration_s(v)
        return v

    @property
    def retry_delays_s(self) -> tuple[float, ...]:
        return tuple(duration_s(d) for d in self.retry_schedule)

    @property
    def max_attempts(self) -> int:
        """The first attempt plus one per scheduled retry."""
        return len(self.retry_schedule) + 1

    @property
    def max_retry_after_s(self) -> float:
        return duration_s(self.max_retry_after)

    @property
    def breaker_reset_s(self) -> float:
        return duration_s(self.breaker_reset)

    @property
    def breaker_window_s(self) -> float:
        return duration_s(self.breaker_window)

    @property
    def breaker_calls(self) -> int:
        """The minimum volume: `breaker_min_calls`, or the legacy `breaker_failures`."""
        if self.breaker_failures is not None and "breaker_min_calls" not in self.model_fields_set:
            return self.breaker_failures
        return self.breaker_min_calls

    @property
    def horizon_s(self) -> float:
        """The longest a delivery stays in flight: every delay at its jitter's top, plus
        one Retry-After at its cap. A delivery waiting on an open circuit longer than
        this is dead-lettered (`expired`), so nothing outlives its dedupe mark."""
        return sum(self.retry_delays_s) * (1 + self.jitter) + self.max_retry_after_s

    @property
    def mark_ttl_s(self) -> float:
        """How long a `delivered` mark is kept (tables/delivered.py)."""
        return self.horizon_s + duration_s(self.dedupe_margin)
