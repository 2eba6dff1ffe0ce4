"""Field types shared by the config models: durations, event types, expressions, names.

Each is an annotated type whose validator raises a message the loader prints after
the rule and field, e.g. `invalid duration '30x' (use 30s, 15m, 2h, 7d)`.
"""

from __future__ import annotations

import datetime as dt
from functools import lru_cache
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field

from nudgeflow.engine.durations import DurationError, parse_duration
from nudgeflow.engine.expressions import Expression, ExpressionError, compile_expression
from nudgeflow.engine.limits import zone_for


def _duration(value: str) -> str:
    try:
        parse_duration(value)
    except DurationError as exc:
        raise ValueError(str(exc)) from None
    return value


def _positive_duration(value: str) -> str:
    if parse_duration(_duration(value)) <= 0:
        raise ValueError(f"duration {value!r} must be greater than zero")
    return value


def _as_list(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


def _event_type(value: str) -> str:
    if not value or not value.strip():
        raise ValueError("event type must not be empty")
    return value


@lru_cache(maxsize=512)
def compiled_expression(source: str) -> Expression:
    """Compile once per distinct source, whether validating or compiling."""
    return compile_expression(source)


def _expression(value: str) -> str:
    try:
        compiled_expression(value)
    except ExpressionError as exc:
        raise ValueError(f"{exc} in {value!r}") from None
    return value


def _clock(value: Any) -> dt.time:
    if isinstance(value, int):  # YAML 1.1 reads an unquoted 21:00 as sexagesimal 1260
        value = f"{value // 60:02d}:{value % 60:02d}"
    if isinstance(value, str):
        try:
            return dt.time.fromisoformat(value.strip())
        except ValueError:
            pass
    raise ValueError(f'invalid time {value!r} (use HH:MM, e.g. "21:00")')


def _zone(value: str) -> str:
    try:
        zone_for(None, value)
    except ValueError:
        raise ValueError(f"unknown time zone {value!r} (use an IANA name, e.g. UTC)") from None
    return value


Duration = Annotated[str, AfterValidator(_duration)]
PositiveDuration = Annotated[str, AfterValidator(_positive_duration)]
EventType = Annotated[str, AfterValidator(_event_type)]
EventTypes = Annotated[list[EventType], BeforeValidator(_as_list)]
WhenExpression = Annotated[str, AfterValidator(_expression)]
ClockTime = Annotated[dt.time, BeforeValidator(_clock)]
Zone = Annotated[str, AfterValidator(_zone)]
Name = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,100}$")]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
