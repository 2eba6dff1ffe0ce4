"""Destinations and delivery policy, as written in nudgeflow.yaml (DESIGN §4).

Secrets are `whsec_…` strings, normally `${ENV_VAR}` references resolved when
the file is loaded; they are held as SecretStr so they never reach logs.
"""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field, HttpUrl, SecretStr, field_validator

_RATE = re.compile(r"^(\d+(?:\.\d+)?)/(s|m|h)$")


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

    @field_validator("rate_limit")
    @classmethod
    def _rate(cls, v: str | None) -> str | None:
        if v is not None and not _RATE.match(v):
            raise ValueError(f"rate_limit {v!r}: expected N/s, N/m or N/h, e.g. 25/s")
        return v

    @field_validator("secret")
    @classmethod
    def _whsec(cls, v: SecretStr | None) -> SecretStr | None:
        if v is not None and not v.get_secret_value().startswith("whsec_"):
            raise ValueError("secret must be a Standard Webhooks secret starting with whsec_")
        return v


class DeliverySettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    retry_schedule: list[str] = ["5s", "5m", "30m", "2h", "5h", "10h", "10h"]
    max_retry_after: str = "1h"
    breaker_failures: int = Field(5, ge=1)  # consecutive failures that open the circuit
    breaker_reset: str = "30s"  # open -> half-open after this long
