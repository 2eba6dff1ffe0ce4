"""Structured logs: key=value lines by default, JSON lines with `log_format: json`
(`NUDGEFLOW_LOG_FORMAT=json`), one record per line, secrets redacted.

Faust's worker configures logging itself (mode's `setup_logging`); we hand it
a dictConfig whose formatter turns every record, ours and the libraries',
into fields: ts, level, logger, msg, then whatever the call passed as
`extra`. Secrets are never logged on purpose (settings and destinations hold
them as SecretStr); the formatter also replaces every configured secret
value it finds in a line, so a library that logs a header cannot leak one.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from mode.utils.logging import level_number

if TYPE_CHECKING:
    from nudgeflow.config.loader import NudgeflowConfig
    from nudgeflow.config.settings import WorkerSettings
    from nudgeflow.engine.actions import Decision

FORMATS = ("text", "json")
REDACTED = "[redacted]"
_MIN_SECRET = 6  # shorter "secrets" would redact ordinary words
_RECORD_FIELDS = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}

decision_log = logging.getLogger("nudgeflow.decisions")


class StructuredFormatter(logging.Formatter):
    def __init__(self, kind: str = "text", secrets: Iterable[str] = ()) -> None:
        super().__init__()
        if kind not in FORMATS:
            raise ValueError(f"log format {kind!r}: expected one of {', '.join(FORMATS)}")
        self.kind = kind
        self.secrets = sorted({s for s in secrets if len(s) >= _MIN_SECRET}, key=len, reverse=True)

    def fields(self, record: logging.LogRecord) -> dict[str, Any]:
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, tz=UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _RECORD_FIELDS and not key.startswith("_") and value is not None:
                out[key] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        if record.stack_info:
            out["stack"] = self.formatStack(record.stack_info)
        return out

    def redact(self, text: str) -> str:
        for secret in self.secrets:
            if secret in text:
                text = text.replace(secret, REDACTED)
        return text

    def format(self, record: logging.LogRecord) -> str:
        fields = {k: self._value(v) for k, v in self.fields(record).items()}
        if self.kind == "json":
            return json.dumps(fields, ensure_ascii=False, default=str)
        return " ".join(f"{k}={_logfmt(v)}" for k, v in fields.items())

    def _value(self, value: Any) -> Any:
        if isinstance(value, bool | int | float):
            return value
        return self.redact(value if isinstance(value, str) else str(value))


def _logfmt(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    text = str(value)
    if text and not any(c in text for c in ' "=\\\n\r\t'):
        return text
    return json.dumps(text, ensure_ascii=False)


def secrets_of(
    config: NudgeflowConfig, settings: WorkerSettings, env: Mapping[str, str] | None = None
) -> list[str]:
    """Every configured secret value: destination secrets and headers, API token, keys."""
    environ = os.environ if env is None else env
    out: list[str] = []
    for dest in config.destinations.values():
        for secret in [dest.secret, *dest.old_secrets]:
            if secret is not None:
                value = secret.get_secret_value()
                out += [value, value.removeprefix("whsec_")]
        out += list(dest.headers.values())
    if settings.api_token is not None:
        out.append(settings.api_token.get_secret_value())
    out += settings.segment_write_keys
    for name in ("NUDGEFLOW_SECRET", "NUDGEFLOW_LINK_SECRET"):
        if environ.get(name):
            out.append(environ[name])
    return [s for s in out if s]


# Ours too: a profile of a `--log-level warning` worker still showed
# `nudgeflow.decisions` building a debug record per decision.
_PINNED_LOGGERS = ("nudgeflow", "aiokafka", "faust", "mode", "rocksdict", "aiohttp", "asyncio")


def logging_config(level: str, kind: str = "text", secrets: Iterable[str] = ()) -> dict[str, Any]:
    """A `logging.config.dictConfig` for Faust's worker (`faust.Worker(logging_config=...)`)."""
    number = level_number(level)
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "structured": {"()": StructuredFormatter, "kind": kind, "secrets": list(secrets)}
        },
        "handlers": {
            "default": {
                "class": "logging.StreamHandler",
                "formatter": "structured",
                "stream": "ext://sys.stdout",
                "level": number,
            }
        },
        "root": {"level": number, "handlers": ["default"]},
        # Pinned too: a library logger left at DEBUG builds a record per Kafka request
        # even when nothing prints it (it showed up as 12% of a worker's CPU).
        "loggers": {name: {"level": number} for name in _PINNED_LOGGERS},
    }


def log_decision(decision: Decision) -> None:
    """One debug line per decision (the full record is on `<prefix>.decisions`)."""
    if not decision_log.isEnabledFor(logging.DEBUG):
        return
    decision_log.debug(
        "decision",
        extra={
            "rule": decision.rule,
            "outcome": decision.outcome,
            "reason": decision.reason,
            "user_id": decision.user_id,
            "trigger_id": decision.trigger_id,
            "variant": decision.variant,
            "deadline": decision.deadline,
            "at": decision.at,
        },
    )
