"""parse_event / parse_batch: every refusal has its reason and field; valid input round-trips."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nudgeflow.events.model import Event, encode_event
from nudgeflow.events.parse import (
    MAX_TS_MS,
    MIN_TS_MS,
    BatchError,
    EventError,
    EventLimits,
    parse_batch,
    parse_event,
)

NOW = 1_714_564_800_000  # 2024-05-01T12:00:00Z
DAY = 86_400_000
GOOD: dict[str, Any] = {"user_id": "u1", "type": "cart_add", "ts": NOW - 1000}


def ev(**overrides: Any) -> bytes:
    """A good event as JSON bytes, with fields replaced (a value of ... deletes it)."""
    fields = {**GOOD, **overrides}
    return json.dumps({k: v for k, v in fields.items() if v is not ...}).encode()


def nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = {"a": value}
    return value


class Weird:
    pass


# (id, input, expected reason, expected field) -- every malformed input we promise to explain
MALFORMED: list[tuple[str, Any, str, str | None]] = [
    ("non_utf8_bytes", b"\xff\xfe{}", "invalid_encoding", None),
    (
        "non_utf8_in_string",
        b'{"user_id": "\xc3\x28", "type": "x", "ts": 1}',
        "invalid_encoding",
        None,
    ),
    ("empty_body", b"", "invalid_json", None),
    ("truncated_json", b'{"user_id": "u1", "type": "cart_add"', "invalid_json", None),
    ("not_json", b"user_id=u1&type=cart_add", "invalid_json", None),
    ("trailing_comma", b'{"user_id": "u1",}', "invalid_json", None),
    ("nan_literal", b'{"user_id": "u1", "type": "x", "ts": NaN}', "invalid_json", None),
    ("number_overflow", b'{"user_id": "u1", "type": "x", "ts": 1e400}', "invalid_json", None),
    (
        "lone_surrogate_escape",
        b'{"user_id": "\\ud800", "type": "x", "ts": 1}',
        "invalid_json",
        None,
    ),
    ("array_not_object", b'[{"user_id": "u1"}]', "not_an_object", None),
    ("string_not_object", b'"cart_add"', "not_an_object", None),
    ("null_not_object", b"null", "not_an_object", None),
    ("python_list", [GOOD], "not_an_object", None),
    ("too_large", ev(properties={"blob": "x" * 70_000}), "too_large", None),
    ("properties_too_deep", ev(properties=nested(17)), "too_deep", "properties"),
    ("traits_too_deep", ev(traits={"l": json.loads("[" * 16 + "]" * 16)}), "too_deep", "traits"),
    ("document_too_deep", b'{"x":' * 3000 + b"1" + b"}" * 3000, "too_deep", None),
    ("missing_user_id", ev(user_id=...), "missing_field", "user_id"),
    ("null_user_id", ev(user_id=None), "missing_field", "user_id"),
    ("bool_user_id", ev(user_id=True), "wrong_type", "user_id"),
    ("float_user_id", ev(user_id=1.5), "wrong_type", "user_id"),
    ("object_user_id", ev(user_id={"id": 1}), "wrong_type", "user_id"),
    ("empty_user_id", ev(user_id=""), "empty_field", "user_id"),
    ("blank_user_id", ev(user_id="   "), "empty_field", "user_id"),
    ("long_user_id", ev(user_id="u" * 257), "too_long", "user_id"),
    ("huge_int_user_id", ev(user_id=10**300), "too_long", "user_id"),
    ("control_char_user_id", ev(user_id="a\nb"), "invalid_characters", "user_id"),
    ("missing_type", ev(type=...), "missing_field", "type"),
    ("numeric_type", ev(type=5), "wrong_type", "type"),
    ("empty_type", ev(type=""), "empty_field", "type"),
    ("title_case_type", ev(type="Product Viewed"), "invalid_type_name", "type"),
    ("digit_first_type", ev(type="9lives"), "invalid_type_name", "type"),
    ("long_type", ev(type="a" * 65), "invalid_type_name", "type"),
    ("type_trailing_newline", ev(type="cart_add\n"), "invalid_type_name", "type"),
    ("missing_ts", ev(ts=...), "missing_field", "ts"),
    ("bool_ts", ev(ts=True), "wrong_type", "ts"),
    ("array_ts", ev(ts=[2024, 5, 1]), "wrong_type", "ts"),
    ("word_ts", ev(ts="yesterday"), "bad_timestamp", "ts"),
    ("impossible_date_ts", ev(ts="2024-02-30T00:00:00Z"), "bad_timestamp", "ts"),
    ("digit_string_ts", ev(ts="1714564800000"), "bad_timestamp", "ts"),
    ("overlong_ts_text", ev(ts="2024-05-01T12:00:00" + "0" * 100), "bad_timestamp", "ts"),
    ("epoch_seconds_ts", ev(ts=1_714_564_800), "timestamp_out_of_range", "ts"),
    ("before_2000_ts", ev(ts="1999-12-31T23:59:59Z"), "timestamp_out_of_range", "ts"),
    ("year_2100_ts", ev(ts="2100-01-01T00:00:00Z"), "timestamp_out_of_range", "ts"),
    ("negative_ts", ev(ts=-1), "timestamp_out_of_range", "ts"),
    ("huge_int_ts", ev(ts=10**30), "timestamp_out_of_range", "ts"),
    ("huge_float_ts", ev(ts=1e300), "timestamp_out_of_range", "ts"),
    ("older_than_max_age", ev(ts=NOW - 366 * DAY), "timestamp_out_of_range", "ts"),
    ("too_far_in_future", ev(ts=NOW + 2 * DAY), "timestamp_out_of_range", "ts"),
    ("float_event_id", ev(event_id=5.5), "wrong_type", "event_id"),
    ("empty_event_id", ev(event_id=""), "empty_field", "event_id"),
    ("long_event_id", ev(event_id="e" * 257), "too_long", "event_id"),
    ("array_properties", ev(properties=[1, 2]), "wrong_type", "properties"),
    ("string_properties", ev(properties="price=5"), "wrong_type", "properties"),
    ("number_traits", ev(traits=7), "wrong_type", "traits"),
    ("mapping_nan_ts", {**GOOD, "ts": float("nan")}, "bad_timestamp", "ts"),
    ("mapping_inf_ts", {**GOOD, "ts": float("inf")}, "bad_timestamp", "ts"),
    ("mapping_surrogate", {**GOOD, "user_id": "\ud800"}, "invalid_encoding", None),
    ("mapping_unencodable_value", {**GOOD, "properties": {"x": Weird()}}, "wrong_type", None),
    ("str_with_surrogate", '{"user_id": "\ud800", "type": "x", "ts": 1}', "invalid_encoding", None),
]


def test_the_malformed_table_is_large_and_distinct() -> None:
    assert len(MALFORMED) >= 25
    assert len({name for name, *_ in MALFORMED}) == len(MALFORMED)


@pytest.mark.parametrize(
    ("raw", "reason", "field"), [m[1:] for m in MALFORMED], ids=[m[0] for m in MALFORMED]
)
def test_malformed_input_is_refused_with_reason_and_field(
    raw: Any, reason: str, field: str | None
) -> None:
    with pytest.raises(EventError) as info:
        parse_event(raw, now_ms=NOW)
    assert (info.value.reason, info.value.field) == (reason, field)
    assert info.value.message
    assert info.value.to_dict() == {"reason": reason, "field": field, "message": str(info.value)}


@pytest.mark.parametrize(
    ("ts", "expected"),
    [
        ("2024-05-01T10:00:00Z", NOW - 2 * 3600_000),
        ("2024-05-01T12:00:00+02:00", NOW - 2 * 3600_000),
        ("2024-05-01T04:30:00-05:30", NOW - 2 * 3600_000),
        ("2024-05-01T10:00:00", NOW - 2 * 3600_000),  # naive means UTC
        ("2024-05-01 10:00:00.250Z", NOW - 2 * 3600_000 + 250),
        ("2024-05-01T10:00:00.123456Z", NOW - 2 * 3600_000 + 123),
        ("20240501T100000Z", NOW - 2 * 3600_000),
        (NOW - 5, NOW - 5),
        (float(NOW - 5) + 0.9, NOW - 5),  # finite floats truncate to whole ms
    ],
)
def test_timestamps_in_every_accepted_form(ts: Any, expected: int) -> None:
    assert parse_event(ev(ts=ts), now_ms=NOW).ts == expected


def test_a_full_event_is_parsed_and_unknown_keys_ignored() -> None:
    raw = ev(
        event_id="e-1",
        properties={"product_id": "p1", "price": 59.9, "quantity": 2, "tags": ["a"]},
        traits={"email": "ana@example.com", "timezone": "Europe/Lisbon"},
        context={"ip": "1.2.3.4"},
    )
    assert parse_event(raw, now_ms=NOW) == Event(
        user_id="u1",
        type="cart_add",
        ts=NOW - 1000,
        event_id="e-1",
        properties={"product_id": "p1", "price": 59.9, "quantity": 2, "tags": ["a"]},
        traits={"email": "ana@example.com", "timezone": "Europe/Lisbon"},
    )


def test_lenient_forms_integer_ids_null_objects_bom_and_text() -> None:
    event = parse_event(ev(user_id=42, event_id=7, properties=None, traits=None), now_ms=NOW)
    assert (event.user_id, event.event_id, event.properties, event.traits) == ("42", "7", {}, {})
    assert parse_event(b"\xef\xbb\xbf" + ev(), now_ms=NOW).user_id == "u1"
    assert parse_event(ev().decode(), now_ms=NOW).user_id == "u1"
    assert parse_event(dict(GOOD), now_ms=NOW).ts == GOOD["ts"]


def test_without_now_only_absurd_timestamps_are_refused() -> None:
    assert parse_event(ev(ts="2001-01-01T00:00:00Z"), now_ms=None).ts == 978_307_200_000
    assert parse_event(ev(ts=MAX_TS_MS - 1), now_ms=None).ts == MAX_TS_MS - 1
    with pytest.raises(EventError, match="epoch seconds"):
        parse_event(ev(ts=MIN_TS_MS // 1000 + 5), now_ms=None)


def test_limits_are_configurable() -> None:
    tight = EventLimits(max_bytes=200, max_depth=2, max_age_ms=DAY, max_skew_ms=1000)
    assert parse_event(ev(properties=nested(2)), now_ms=NOW, limits=tight).properties
    for raw, reason in [
        (ev(properties=nested(3)), "too_deep"),
        (ev(ts=NOW - 2 * DAY), "timestamp_out_of_range"),
        (ev(ts=NOW + 2000), "timestamp_out_of_range"),
        (ev(properties={"x": "y" * 200}), "too_large"),
    ]:
        with pytest.raises(EventError) as info:
            parse_event(raw, now_ms=NOW, limits=tight)
        assert info.value.reason == reason


def test_batch_accepts_an_array_or_one_object() -> None:
    body = b" [" + b",".join(ev(event_id=f"e{i}") for i in range(3)) + b"]"
    assert [e.event_id for e in parse_batch(body, now_ms=NOW)] == ["e0", "e1", "e2"]
    assert parse_batch(ev(), now_ms=NOW) == [parse_event(ev(), now_ms=NOW)]
    assert parse_batch(b"[]", now_ms=NOW) == []


def test_batch_lists_every_bad_index_and_accepts_nothing() -> None:
    items = [ev(), ev(user_id=...), ev(), ev(ts="soon"), b"[]"]
    with pytest.raises(BatchError) as info:
        parse_batch(b"[" + b",".join(items) + b"]", now_ms=NOW)
    assert [(i, e.reason, e.field) for i, e in info.value.errors] == [
        (1, "missing_field", "user_id"),
        (3, "bad_timestamp", "ts"),
        (4, "not_an_object", None),
    ]
    assert info.value.total == 5
    listed = info.value.to_dict()["errors"]
    assert [e["index"] for e in listed] == [1, 3, 4]
    assert all(e["message"] for e in listed)


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"[" + b",".join([ev()] * 4) + b"]", "too_many_events"),
        (b'[{"a": 1}', "invalid_json"),
        (b"[\xff]", "invalid_encoding"),
        (b"[" * 5000 + b"]" * 5000, "too_deep"),
        (b"17", "not_an_object"),
    ],
)
def test_batch_level_problems_have_no_index(body: bytes, reason: str) -> None:
    with pytest.raises(BatchError) as info:
        parse_batch(body, now_ms=NOW, max_batch=3)
    assert [(i, e.reason) for i, e in info.value.errors] == [(None, reason)]


def test_single_bad_object_in_batch_call_has_no_index() -> None:
    with pytest.raises(BatchError) as info:
        parse_batch(ev(type="Bad Type"), now_ms=NOW)
    assert [(i, e.field) for i, e in info.value.errors] == [(None, "type")]


# -- property-based fuzzing ------------------------------------------------------------

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=25,
)
python_values = st.recursive(
    json_scalars
    | st.floats()
    | st.binary(max_size=8)
    | st.datetimes()
    | st.sampled_from([Weird()]),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.text(max_size=5) | st.integers(), inner, max_size=3)
    ),
    max_leaves=15,
)
field_values = st.one_of(
    json_values,
    st.integers(min_value=MIN_TS_MS - DAY, max_value=MAX_TS_MS + DAY),
    st.datetimes(min_value=datetime(1, 1, 2), timezones=st.sampled_from([None, UTC])).map(
        lambda d: d.isoformat()
    ),
    st.from_regex(r"[a-z][a-z0-9_]{0,70}", fullmatch=True),
)
event_like = st.fixed_dictionaries(
    {},
    optional={
        "user_id": field_values,
        "type": field_values,
        "ts": field_values,
        "event_id": field_values,
        "properties": field_values,
        "traits": field_values,
        "extra": python_values,
    },
)
# NUDGEFLOW_FUZZ_SCALE=10 multiplies the examples for a long fuzzing run (issue 7).
SCALE = max(1, int(os.environ.get("NUDGEFLOW_FUZZ_SCALE", "1")))


def fuzz(examples: int) -> settings:
    return settings(
        max_examples=examples * SCALE,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
    )


def _parse_or_error(raw: Any) -> Event | EventError:
    try:
        return parse_event(raw, now_ms=NOW)
    except EventError as exc:
        assert exc.reason and exc.message
        return exc


@fuzz(5000)
@given(st.binary(max_size=300))
def test_fuzz_arbitrary_bytes_only_raise_event_error(raw: bytes) -> None:
    _parse_or_error(raw)


@fuzz(1000)
@given(event_like)
def test_fuzz_event_like_mappings_and_their_json(obj: dict[str, Any]) -> None:
    direct = _parse_or_error(obj)
    try:
        encoded = msgspec.json.encode(obj)
    except (TypeError, UnicodeEncodeError):
        return
    via_bytes = _parse_or_error(encoded)
    if isinstance(direct, Event):
        assert via_bytes == direct
        assert msgspec.json.decode(encode_event(direct), type=Event) == direct


@fuzz(200)
@given(st.lists(event_like | json_values, max_size=4))
def test_fuzz_batches_only_raise_batch_error(items: list[Any]) -> None:
    try:
        body = msgspec.json.encode(items)
    except (TypeError, UnicodeEncodeError):
        return
    try:
        events = parse_batch(body, now_ms=NOW)
    except BatchError as exc:
        assert exc.errors and all(isinstance(e, EventError) for _, e in exc.errors)
    else:
        assert len(events) == len(items)


# What a valid event may carry: integers the state can hold (64 bits), and no key that
# events/values.py governs (quantity, price, ..., timezone): those are tested on their own.
storable_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
flat_values = storable_scalars | st.lists(storable_scalars, max_size=3)
plain_keys = st.text(max_size=8).filter(
    lambda k: k not in {"quantity", "price", "cart_value", "revenue", "total", "value", "timezone"}
)
ids = st.text(min_size=1, max_size=40).filter(lambda s: s.isprintable() and not s.isspace())
valid_events = st.builds(
    Event,
    user_id=ids,
    type=st.from_regex(r"[a-z][a-z0-9_]{0,63}", fullmatch=True),
    ts=st.integers(min_value=NOW - 300 * DAY, max_value=NOW + DAY // 2),
    event_id=st.none() | ids,
    properties=st.dictionaries(plain_keys, flat_values, max_size=4),
    traits=st.dictionaries(plain_keys, flat_values, max_size=4),
)


@fuzz(300)
@given(valid_events, st.sampled_from(["ms", "iso_z", "iso_offset"]))
def test_valid_events_round_trip(event: Event, ts_form: str) -> None:
    raw = msgspec.to_builtins(event)
    moment = datetime.fromtimestamp(event.ts / 1000, UTC)
    if ts_form == "iso_z":
        raw["ts"] = moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    elif ts_form == "iso_offset":
        raw["ts"] = moment.astimezone(timezone(timedelta(hours=-7))).isoformat(
            timespec="milliseconds"
        )
    parsed = parse_event(msgspec.json.encode(raw), now_ms=NOW)
    assert parsed == event
