"""Worker settings: the `settings:` section of nudgeflow.yaml, overridden by
`NUDGEFLOW_*` environment variables, overridden by command-line flags.

Secrets (the API token) come from the environment only and are never logged:
`WorkerSettings.__repr__` masks them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from nudgeflow.engine.durations import parse_duration
from nudgeflow.engine.sandbox.budget import Budget
from nudgeflow.events.parse import EventLimits


class SettingsError(ValueError):
    pass


class WorkerSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    broker: str = Field("127.0.0.1:9092", description="Kafka bootstrap servers, host:port[,...]")
    topic_prefix: str = Field("nudgeflow", pattern=r"^[A-Za-z0-9._-]{1,100}$")
    partitions: int = Field(4, ge=1, le=1024)
    replication_factor: int = Field(1, ge=1, le=5)
    app_id: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9._-]{1,100}$",
        description="Faust app id (consumer group, changelog topic prefix); default: topic_prefix",
    )
    web_host: str = "127.0.0.1"
    web_port: int = Field(6066, ge=0, le=65535)
    advertised_url: str | None = Field(
        None,
        description="How other workers reach this one (default http://web_host:web_port); "
        "set it when binding 0.0.0.0, e.g. http://worker-1:6066 in Docker",
    )
    data_dir: Path = Path("var/nudgeflow")
    api_token: SecretStr | None = None
    segment_write_keys: list[str] = []
    max_event_bytes: int = Field(64 * 1024, ge=256)
    max_body_bytes: int = Field(1024 * 1024, ge=1024)
    max_batch: int = Field(1000, ge=1)
    max_event_age: str = "365d"
    max_event_skew: str = "1d"
    tick_interval_s: float = Field(0.1, gt=0, le=10)
    standby_replicas: int = Field(0, ge=0, le=3)
    roles: list[str] = Field(
        ["evaluate", "deliver"],
        description="What this worker runs: evaluate (rules + timers), deliver (webhooks)",
    )
    log_level: str = Field("info", pattern=r"^(debug|info|warn|warning|error|crit)$")
    log_format: str = Field("text", pattern=r"^(text|json)$", description="key=value or JSON lines")
    max_attempts: int = Field(
        3,
        ge=1,
        le=100,
        description="Failed or overrun attempts at handling one record (or firing one due "
        "user) before it goes to the events DLQ; counted durably (tables/attempts.py)",
    )
    handling_budget_s: float = Field(
        2.0,
        gt=0,
        le=60,
        description="Wall time one engine call (one event, or one due user) may take; "
        "past it the call is stopped and counts as a failed attempt",
    )
    consumer_on_loop: bool = Field(
        False,
        description="Run Kafka's consumer on the worker's event loop instead of its own "
        "thread: lower latency below saturation; heartbeats then stop while the loop is "
        "held (docs/performance.md, 'Consumer on the event loop')",
    )
    test_hook: str | None = Field(
        None,
        pattern=r"^(spin|raise):[A-Za-z0-9_.-]{1,100}(:[0-9]{1,4}(\.[0-9]{1,3})?)?$",
        description="Tests only: 'spin:TYPE:SECONDS' burns CPU, 'raise:TYPE' raises, in the "
        "handling of every event of TYPE (agents/hooks.py)",
    )

    # Budgets for every template render and `when`/`entry` evaluation (engine/sandbox/): over
    # one, that send alone is lost, as decision `render_failed` whose reason is the limit.
    render_loop_iterations: int = Field(100_000, ge=1, description="loop iterations per render")
    render_string_length: int = Field(1_000_000, ge=1, description="chars in any one string")
    render_list_length: int = Field(100_000, ge=1, description="items in any one list")
    render_int_bits: int = Field(4_096, ge=64, description="bits in any one integer")
    render_output_length: int = Field(1_000_000, ge=1, description="chars of a render's output")
    render_built_chars: int = Field(10_000_000, ge=1, description="chars built over one render")
    render_wall_time_ms: int = Field(250, ge=1, description="wall time of one render")

    # The web server against slow and many clients (web/connections.py, issue 21.3).
    http_idle_timeout_s: float = Field(
        15.0,
        gt=0,
        le=3600,
        description="A connection that has not sent a complete request's headers within "
        "this (from connect, or from the last response: keep-alive idle) is closed",
    )
    http_body_timeout_s: float = Field(
        30.0, gt=0, le=3600, description="Time to read a request body; past it a 408"
    )
    http_max_connections: int = Field(
        1000,
        ge=1,
        description="Connections served in total; beyond, and beyond "
        "http_max_connections_per_client, a request gets 503 + Retry-After "
        "(/health and /ready are still answered)",
    )
    http_max_connections_per_client: int = Field(100, ge=1, description="per client address")
    http_fd_reserve: int = Field(
        256,
        ge=16,
        description="File descriptors the web server never takes, for Kafka, RocksDB and "
        "the webhook client: connections stay below RLIMIT_NOFILE - reserve - listen backlog",
    )
    link_base_url: str | None = Field(
        None,
        pattern=r"^https?://[^\s?#]+$",
        description="Where tracked links and open pixels point (GET /r/, /o/): the public "
        "address of the workers; default advertised_url, else http://web_host:web_port",
    )
    link_ttl: str = Field("90d", description="How long a tracked link or pixel is honoured")
    allowed_origins: list[str] = Field(
        [],
        description="Browser origins (scheme://host[:port]) allowed to call the API, with "
        "CORS on POST /events and /v1/*; the worker's own console origin is always allowed",
    )

    @field_validator("allowed_origins")
    @classmethod
    def _origins_are_origins(cls, v: list[str]) -> list[str]:
        """`scheme://host[:port]` as a browser sends it in `Origin`: no path, no slash."""
        out = []
        for origin in (o.strip() for o in v):
            scheme, sep, rest = origin.partition("://")
            if scheme.lower() not in ("http", "https") or not sep or not rest:
                raise ValueError(f"an origin is http(s)://host[:port], got {origin!r}")
            if any(c in rest for c in "/?#@ "):
                raise ValueError(f"an origin has no path, query or user: {origin!r}")
            out.append(origin.lower())
        return out

    @property
    def group_id(self) -> str:
        return self.app_id or self.topic_prefix

    def event_limits(self) -> EventLimits:
        """What every ingestion path (HTTP, Segment, WebSocket, Kafka) accepts."""
        return EventLimits(
            max_bytes=self.max_event_bytes,
            max_age_ms=parse_duration(self.max_event_age),
            max_skew_ms=parse_duration(self.max_event_skew),
        )

    def link_base(self) -> str:
        return (
            self.link_base_url or self.advertised_url or f"http://{self.web_host}:{self.web_port}"
        )

    def render_budget(self) -> Budget:
        return Budget(
            loop_iterations=self.render_loop_iterations,
            string_length=self.render_string_length,
            list_length=self.render_list_length,
            int_bits=self.render_int_bits,
            output_length=self.render_output_length,
            built_chars=self.render_built_chars,
            wall_time_ms=self.render_wall_time_ms,
        )

    @field_validator("broker")
    @classmethod
    def _broker_has_port(cls, v: str) -> str:
        for part in v.split(","):
            host, _, port = part.strip().rpartition(":")
            if not host or not port.isdigit():
                raise ValueError(f"expected host:port, got {part!r}")
        return v


_ENV_PREFIX = "NUDGEFLOW_"


def _from_env(env: Mapping[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, field in WorkerSettings.model_fields.items():
        raw = env.get(_ENV_PREFIX + name.upper())
        if raw is None:
            continue
        out[name] = raw.split(",") if field.annotation == list[str] else raw
    return out


def resolve_settings(
    file_section: Mapping[str, Any] | None,
    *,
    env: Mapping[str, str] | None = None,
    flags: Mapping[str, Any] | None = None,
) -> WorkerSettings:
    """Merge file < environment < flags (flags that are None are not given)."""
    merged: dict[str, Any] = dict(file_section or {})
    merged.update(_from_env(os.environ if env is None else env))
    merged.update({k: v for k, v in (flags or {}).items() if v is not None})
    try:
        return WorkerSettings.model_validate(merged)
    except ValidationError as exc:
        problems = "; ".join(
            f"settings.{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        raise SettingsError(problems) from None
