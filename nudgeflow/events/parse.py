"""Validation of producer input into `Event` (DESIGN §2): the one gate every
source (Kafka, HTTP, Segment, WebSocket) goes through, so they cannot disagree.

Decisions, so producers know what to expect:
- Input is UTF-8 JSON (a leading BOM is tolerated). A decoded `Mapping` is
  re-encoded to JSON first and validated exactly like bytes, so odd Python
  values (sets, datetimes, lone surrogates) get the same answer as on the wire.
- `user_id` and `event_id` are strings; JSON integers are accepted and turned
  into their decimal string (many shops key users by integer). Booleans and
  floats are refused. Ids must be printable (no control characters) and not blank.
- `type` is snake_case: `^[a-z][a-z0-9_]{0,63}$`.
- `ts` is an ISO 8601 string (`Z` or an offset; a naive time is read as UTC) or
  epoch milliseconds as a JSON number (a finite float is truncated to whole ms).
  Anything before 2000-01-01 or from 2100-01-01 on is refused always; with
  `now_ms` given, so is anything older than `max_age_ms` or further than
  `max_skew_ms` in the future.
- `properties` and `traits` are optional objects (`null` means empty), nested at
  most `max_depth` levels.
- Unknown top-level keys are ignored (forward compatible; e.g. a `context`).

Every refusal is an `EventError` with a stable snake_case `reason`, used as the
`nudgeflow-reason` DLQ header and the `reason` metrics label:
invalid_encoding, invalid_json, not_an_object, too_large, too_deep, missing_field,
wrong_type, empty_field, too_long, invalid_characters, invalid_type_name,
bad_timestamp, timestamp_out_of_range, too_many_events, unprocessable, and
(events/values.py: what the engine can apply and the state can hold)
out_of_range, invalid_time_zone.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec

from nudgeflow.events import values
from nudgeflow.events.errors import BatchError, EventError
from nudgeflow.events.model import KNOWN_ID, MERGE_EVENT, MERGE_ID, Event

__all__ = [
    "DEFAULT_LIMITS",
    "BatchError",
    "EventError",
    "EventLimits",
    "parse_batch",
    "parse_event",
]

DAY_MS = 24 * 3600 * 1000
MIN_TS_MS = 946_684_800_000  # 2000-01-01T00:00:00Z
MAX_TS_MS = 4_102_444_800_000  # 2100-01-01T00:00:00Z
TYPE_PATTERN = r"^[a-z][a-z0-9_]{0,63}$"

_TYPE_RE = re.compile(TYPE_PATTERN)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MS = timedelta(milliseconds=1)
_BOM = b"\xef\xbb\xbf"
_MAX_TS_TEXT = 64
_decode_any = msgspec.json.Decoder()
_decode_raw_list = msgspec.json.Decoder(list[msgspec.Raw])
_decode_event = msgspec.json.Decoder(Event)
_KNOWN_TYPES: set[str] = set()  # type names that passed `_type` (a handful in practice)
_encode = msgspec.json.Encoder()


@dataclass(frozen=True, slots=True)
class EventLimits:
    max_bytes: int = 64 * 1024
    max_depth: int = 16
    max_age_ms: int = 365 * DAY_MS
    max_skew_ms: int = DAY_MS
    max_user_id_len: int = 256
    max_event_id_len: int = 256


DEFAULT_LIMITS = EventLimits()

_Buffer = bytes | bytearray | memoryview | msgspec.Raw


def parse_event(
    raw: bytes | bytearray | memoryview | msgspec.Raw | str | Mapping[str, Any],
    *,
    now_ms: int | None,
    limits: EventLimits = DEFAULT_LIMITS,
) -> Event:
    """Validate one event; raises only `EventError`, whatever the input."""
    if type(raw) is bytes:
        event = _fast_path(raw, now_ms, limits)
        if event is not None:
            return _merge_checked(event, limits) if event.type == MERGE_EVENT else event
    try:
        event = _validate(_load(raw, limits), now_ms, limits)
        return _merge_checked(event, limits) if event.type == MERGE_EVENT else event
    except EventError:
        raise
    except RecursionError:
        raise EventError("too_deep", "event is nested too deeply") from None
    except Exception as exc:  # never let odd input escape as another exception type
        raise EventError("unprocessable", f"event could not be processed: {exc}") from None


def parse_batch(
    raw: bytes | bytearray | memoryview,
    *,
    now_ms: int | None,
    limits: EventLimits = DEFAULT_LIMITS,
    max_batch: int = 1000,
) -> list[Event]:
    """One JSON object or a JSON array of them; all-or-nothing (`BatchError`)."""
    data = bytes(raw).lstrip()
    if data.startswith(_BOM):
        data = data[3:].lstrip()
    if not data.startswith(b"["):
        try:
            return [parse_event(data, now_ms=now_ms, limits=limits)]
        except EventError as exc:
            raise BatchError([(None, exc)]) from None
    try:
        items = _decode_raw_list.decode(data)
    except RecursionError:
        raise BatchError([(None, EventError("too_deep", "body is nested too deeply"))]) from None
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise BatchError([(None, _decode_error(data, exc))]) from None
    if len(items) > max_batch:
        err = EventError(
            "too_many_events", f"a batch holds at most {max_batch} events, got {len(items)}"
        )
        raise BatchError([(None, err)], total=len(items))
    events: list[Event] = []
    errors: list[tuple[int | None, EventError]] = []
    for index, item in enumerate(items):
        try:
            events.append(parse_event(item, now_ms=now_ms, limits=limits))
        except EventError as exc:
            errors.append((index, exc))
    if errors:
        raise BatchError(errors, total=len(items))
    return events


def _fast_path(raw: bytes, now_ms: int | None, limits: EventLimits) -> Event | None:
    """The common, valid event decoded straight into `Event` (about twice as fast).

    msgspec checks the JSON types while decoding; the same validators as the
    general path then check the values. Anything unusual (integer ids, ISO
    times, nulls, a BOM, bad JSON) or invalid returns None, and the general
    path gives the answer and the precise error, so results are identical.
    """
    if len(raw) > limits.max_bytes:
        return None
    if not raw.isascii():  # msgspec skips ignored keys unchecked: validate the UTF-8 here
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError:
            return None
    try:
        event = _decode_event.decode(raw)
        _id(event.user_id, "user_id", limits.max_user_id_len, required=True)
        if event.type not in _KNOWN_TYPES:
            _type(event.type)
            if len(_KNOWN_TYPES) < 1024:
                _KNOWN_TYPES.add(event.type)
        _timestamp(event.ts, now_ms, limits)
        _id(event.event_id, "event_id", limits.max_event_id_len, required=False)
        _object(event.properties, "properties", limits.max_depth)
        _object(event.traits, "traits", limits.max_depth)
    except Exception:  # any doubt: the general path decides and explains
        return None
    return event


def _load(raw: object, limits: EventLimits) -> dict[str, Any]:
    if isinstance(raw, Mapping):
        return _load_bytes(_encode_mapping(raw), limits)
    if isinstance(raw, str):
        try:
            return _load_bytes(raw.encode("utf-8"), limits)
        except UnicodeEncodeError:
            raise EventError("invalid_encoding", "event text is not valid Unicode") from None
    if isinstance(raw, _Buffer):
        return _load_bytes(raw, limits)
    raise EventError("not_an_object", f"an event is a JSON object, got {type(raw).__name__}")


def _encode_mapping(raw: Mapping[Any, Any]) -> bytes:
    ts = raw.get("ts")
    if isinstance(ts, float) and not math.isfinite(ts):
        raise EventError("bad_timestamp", "ts must be a finite number", "ts")
    try:
        return _encode.encode(raw if isinstance(raw, dict) else dict(raw))
    except UnicodeEncodeError:
        raise EventError(
            "invalid_encoding", "event contains text that is not valid Unicode"
        ) from None
    except (TypeError, ValueError, OverflowError) as exc:
        raise EventError("wrong_type", f"event holds a value JSON cannot carry: {exc}") from None


def _load_bytes(raw: _Buffer, limits: EventLimits) -> dict[str, Any]:
    size = len(raw)
    if size > limits.max_bytes:
        raise EventError(
            "too_large", f"event is {size} bytes; the limit is {limits.max_bytes} bytes"
        )
    try:
        obj = _decode_any.decode(raw)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        data = bytes(raw)
        if data.startswith(_BOM):
            return _load_bytes(data[3:], limits)
        raise _decode_error(data, exc) from None
    except RecursionError:
        raise EventError("too_deep", "event is nested too deeply") from None
    if type(obj) is not dict:
        raise EventError("not_an_object", f"an event is a JSON object, got {_json_kind(obj)}")
    return obj


def _decode_error(data: bytes, exc: Exception) -> EventError:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as uexc:
        return EventError("invalid_encoding", f"body is not valid UTF-8 (byte {uexc.start})")
    return EventError("invalid_json", f"body is not valid JSON: {exc}")


def _validate(obj: dict[str, Any], now_ms: int | None, limits: EventLimits) -> Event:
    return Event(
        user_id=_id(obj.get("user_id"), "user_id", limits.max_user_id_len, required=True),
        type=_type(obj.get("type")),
        ts=_timestamp(obj.get("ts"), now_ms, limits),
        event_id=_id(obj.get("event_id"), "event_id", limits.max_event_id_len, required=False),
        properties=_object(obj.get("properties"), "properties", limits.max_depth),
        traits=_object(obj.get("traits"), "traits", limits.max_depth),
    )


def _merge_checked(event: Event, limits: EventLimits) -> Event:
    """An identity-merge request names the id it merges into like a user id, and a merge
    id like an event id (engine/identity.py): the known id becomes a key and a state."""
    for name, max_len in ((KNOWN_ID, limits.max_user_id_len), (MERGE_ID, limits.max_event_id_len)):
        value, field = event.properties.get(name), f"properties.{name}"
        if value is not None and type(value) is not str:
            raise EventError("wrong_type", f"{field} must be a string", field)
        _id(value, field, max_len, required=True)
    return event


def _id(value: Any, field: str, max_len: int, *, required: bool) -> Any:
    if value is None:
        if required:
            raise EventError("missing_field", f"{field} is required", field)
        return None
    if type(value) is int:
        value = str(value)
    elif type(value) is not str:
        raise EventError("wrong_type", f"{field} must be a string, got {_json_kind(value)}", field)
    if not value or value.isspace():
        raise EventError("empty_field", f"{field} must not be empty", field)
    if len(value) > max_len:
        raise EventError(
            "too_long", f"{field} is {len(value)} characters; at most {max_len} allowed", field
        )
    if not value.isprintable():
        raise EventError("invalid_characters", f"{field} contains control characters", field)
    return value


def _type(value: Any) -> str:
    if value is None:
        raise EventError("missing_field", "type is required", "type")
    if type(value) is not str:
        raise EventError("wrong_type", f"type must be a string, got {_json_kind(value)}", "type")
    if not value:
        raise EventError("empty_field", "type must not be empty", "type")
    if _TYPE_RE.fullmatch(value) is None:
        shown = value if len(value) <= 80 else value[:77] + "..."
        raise EventError(
            "invalid_type_name",
            f"type {shown!r} is not snake_case (lowercase letters, digits and _, "
            "starting with a letter, at most 64 characters)",
            "type",
        )
    return value


def _timestamp(value: Any, now_ms: int | None, limits: EventLimits) -> int:
    kind = type(value)
    if value is None:
        raise EventError("missing_field", "ts is required", "ts")
    if kind is int:
        ms: int = value
    elif kind is float:
        if not math.isfinite(value):
            raise EventError("bad_timestamp", "ts must be a finite number", "ts")
        ms = int(value) if abs(value) < 1e18 else MAX_TS_MS
    elif kind is str:
        ms = _iso_ms(value)
    else:
        raise EventError(
            "wrong_type",
            f"ts must be an ISO 8601 string or epoch milliseconds, got {_json_kind(value)}",
            "ts",
        )
    if not MIN_TS_MS <= ms < MAX_TS_MS:
        hint = ""
        if kind is not str and MIN_TS_MS // 1000 <= ms < MAX_TS_MS // 1000:
            hint = " (this looks like epoch seconds; ts is epoch milliseconds)"
        raise EventError("timestamp_out_of_range", f"ts must be between 2000 and 2100{hint}", "ts")
    if now_ms is not None:
        if ms < now_ms - limits.max_age_ms:
            raise EventError(
                "timestamp_out_of_range",
                f"ts is older than the {limits.max_age_ms // DAY_MS}-day limit",
                "ts",
            )
        if ms > now_ms + limits.max_skew_ms:
            raise EventError(
                "timestamp_out_of_range",
                f"ts is more than {limits.max_skew_ms // 1000} s in the future",
                "ts",
            )
    return ms


def _iso_ms(text: str) -> int:
    if len(text) > _MAX_TS_TEXT:
        raise EventError("bad_timestamp", "ts is not an ISO 8601 time", "ts")
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        shown = text if len(text) <= 40 else text[:37] + "..."
        raise EventError(
            "bad_timestamp",
            f"ts {shown!r} is not an ISO 8601 time (e.g. 2024-05-01T12:00:00Z)",
            "ts",
        ) from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    try:
        return (dt - _EPOCH) // _ONE_MS
    except OverflowError:
        raise EventError(
            "timestamp_out_of_range", "ts must be between 2000 and 2100", "ts"
        ) from None


def _object(value: Any, field: str, max_depth: int) -> dict[str, Any]:
    if value is None:
        return {}
    if type(value) is not dict:
        raise EventError("wrong_type", f"{field} must be an object, got {_json_kind(value)}", field)
    if _deeper_than(value, max_depth):
        raise EventError("too_deep", f"{field} is nested more than {max_depth} levels", field)
    values.check(value, field)
    return value


def _deeper_than(value: Any, budget: int) -> bool:
    """True when the container (a dict or list) nests more than `budget` levels,
    itself counting one. Stops early, so recursion is bounded by `budget`."""
    if budget <= 0:
        return True
    children = value.values() if type(value) is dict else value
    for child in children:
        kind = type(child)
        if (kind is dict or kind is list) and _deeper_than(child, budget - 1):
            return True
    return False


def _json_kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__
