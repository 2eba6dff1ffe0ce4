"""Property-based fuzzing of the event parsers (issue 7 item 5): 11,000+ generated inputs.

tests/unit/events/test_parse.py fuzzes arbitrary bytes and event-like mappings; these
properties aim at the classes of bad input the issue names, each with an oracle:
non-UTF-8 bytes inside otherwise valid JSON, deep nesting, huge numbers, a wrong type in
one field, timestamps far in the past and future, the fast path agreeing with the
general one, batches naming exactly the bad indexes, and Segment bodies.
NUDGEFLOW_FUZZ_SCALE multiplies the examples, as in the unit tests.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nudgeflow.events.model import Event
from nudgeflow.events.parse import (
    DAY_MS,
    DEFAULT_LIMITS,
    MAX_TS_MS,
    MIN_TS_MS,
    BatchError,
    EventError,
    parse_batch,
    parse_event,
)
from nudgeflow.events.segment import parse_segment_batch, parse_segment_message

NOW = 1_780_000_000_000  # 2026-05-28
SCALE = max(1, int(os.environ.get("NUDGEFLOW_FUZZ_SCALE", "1")))
LIMITS = DEFAULT_LIMITS


def fuzz(examples: int) -> settings:
    return settings(
        max_examples=examples * SCALE,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        database=None,
    )


def outcome(raw: Any) -> Event | tuple[str, str | None]:
    """The parse result, or (reason, field); any other exception fails the test."""
    try:
        return parse_event(raw, now_ms=NOW)
    except EventError as exc:
        assert exc.reason and exc.message, exc
        return exc.reason, exc.field


def base_event(**override: Any) -> dict[str, Any]:
    return {"user_id": "u1", "type": "cart_add", "ts": NOW - 1000, **override}


json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner),
    max_leaves=12,
)

# -- non-UTF-8 bytes ------------------------------------------------------------------------

BAD_UTF8 = st.sampled_from(
    [
        b"\xff",
        b"\xfe",
        b"\x80",
        b"\xc0\xaf",  # overlong "/"
        b"\xe0\x80\xaf",  # overlong
        b"\xed\xa0\x80",  # a UTF-16 surrogate
        b"\xf4\x90\x80\x80",  # beyond U+10FFFF
        b"\xc3",  # truncated sequence
        b"\xe2\x82",
    ]
) | st.binary(min_size=1, max_size=4).filter(lambda b: not _is_utf8(b))


def _is_utf8(b: bytes) -> bool:
    try:
        b.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


@fuzz(2000)
@given(
    field=st.sampled_from(["user_id", "type", "event_id", "properties", "traits", "other"]),
    bad=BAD_UTF8,
    prefix=st.text(max_size=5),
)
def test_invalid_utf8_inside_valid_json_is_invalid_encoding(field: str, bad: bytes, prefix: str):
    marker = "\x00MARK\x00"
    obj = base_event(
        **{field: {"k": prefix + marker} if field in ("properties", "traits") else prefix + marker}
    )
    raw = json.dumps(obj).encode().replace(json.dumps(marker)[1:-1].encode(), bad)
    assert outcome(raw) == ("invalid_encoding", None)
    assert outcome(bytearray(raw)) == ("invalid_encoding", None)


# -- deep nesting ---------------------------------------------------------------------------


@fuzz(600)
@given(
    depth=st.integers(min_value=1, max_value=LIMITS.max_depth + 8)
    | st.integers(min_value=1, max_value=200_000),
    field=st.sampled_from(["properties", "traits"]),
    kind=st.sampled_from(["object", "array"]),
)
def test_deep_nesting_is_refused_past_the_limit_and_never_crashes(
    depth: int, field: str, kind: str
):
    if kind == "object":
        nested = '{"a":' * depth + "1" + "}" * depth
    else:
        nested = '{"a":' + "[" * (depth - 1) + "1" + "]" * (depth - 1) + "}"
    head = json.dumps(base_event())[:-1]
    raw = f'{head}, "{field}": {nested}}}'.encode()
    result = outcome(raw)
    if len(raw) > LIMITS.max_bytes:
        assert result == ("too_large", None)
    elif depth <= LIMITS.max_depth:
        assert isinstance(result, Event), result
    else:
        assert result[0] == "too_deep", result  # type: ignore[index]


@fuzz(300)
@given(depth=st.integers(min_value=1, max_value=500_000), opener=st.sampled_from(["[", '{"a":']))
def test_deeply_nested_bodies_only_raise_event_or_batch_errors(depth: int, opener: str):
    closer = "]" if opener == "[" else "}"
    raw = (opener * depth + "1" + closer * depth).encode()
    result = outcome(raw)
    assert not isinstance(result, Event)
    try:
        parse_batch(raw, now_ms=NOW, limits=LIMITS)
    except BatchError as exc:
        assert exc.errors
    else:
        raise AssertionError("a nested body was accepted as a batch")


# -- huge numbers and timestamps ----------------------------------------------------------

huge_numbers = st.one_of(
    st.integers(min_value=-(10**40), max_value=10**40),
    st.integers(min_value=0, max_value=400).map(lambda e: 10**e),
    st.integers(min_value=0, max_value=400).map(lambda e: -(10**e)),
    st.sampled_from(["1e308", "1e309", "-1e400", "1e-400", "123456789e999", "0.0", "-0"]),
    st.floats(allow_nan=False, allow_infinity=False),
)


def _number_text(n: int | float | str) -> str:
    return n if isinstance(n, str) else json.dumps(n)


@fuzz(1500)
@given(number=huge_numbers, field=st.sampled_from(["ts", "user_id", "event_id", "type", "props"]))
def test_huge_numbers_anywhere_are_accepted_or_refused_with_a_reason(
    number: int | float | str, field: str
):
    text = _number_text(number)
    head = json.dumps({k: v for k, v in base_event().items() if k != field})[:-1]
    key = "properties" if field == "props" else field
    value = f'{{"n": {text}}}' if field == "props" else text
    raw = f'{head}, "{key}": {value}}}'.encode()
    result = outcome(raw)
    if isinstance(result, Event):
        if field == "ts":
            assert NOW - LIMITS.max_age_ms <= result.ts <= NOW + LIMITS.max_skew_ms
        elif field in ("user_id", "event_id"):
            assert getattr(result, field) == str(int(text))
    elif result[0] == "out_of_range":  # an integer the state cannot hold (events/values.py)
        assert field == "props" and not -(2**63) <= int(text) < 2**64, (text, result)
    else:
        assert result[0] in {"invalid_json", "timestamp_out_of_range", "wrong_type", "too_long"}


def _expected_ts(ms: int) -> Event | tuple[str, str | None]:
    if MIN_TS_MS <= ms < MAX_TS_MS and NOW - LIMITS.max_age_ms <= ms <= NOW + LIMITS.max_skew_ms:
        return Event(user_id="u1", type="cart_add", ts=ms)
    return ("timestamp_out_of_range", "ts")


@fuzz(1200)
@given(
    ms=st.integers(min_value=-(10**18), max_value=10**18)
    | st.integers(min_value=NOW - 2 * LIMITS.max_age_ms, max_value=NOW + 3 * DAY_MS)
)
def test_epoch_milliseconds_far_past_and_future(ms: int):
    assert outcome(msgspec.json.encode(base_event(ts=ms))) == _expected_ts(ms)


@fuzz(1200)
@given(
    moment=st.datetimes(
        min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=st.just(UTC)
    ),
    form=st.sampled_from(["z", "offset", "naive"]),
)
def test_iso_timestamps_far_past_and_future(moment: datetime, form: str):
    text = moment.isoformat()
    if form == "z":
        text = text.replace("+00:00", "Z")
    elif form == "naive":
        text = text.replace("+00:00", "")
    ms = (moment - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1)
    assert outcome(msgspec.json.encode(base_event(ts=text))) == _expected_ts(ms)


# -- wrong types ----------------------------------------------------------------------------

finite = st.floats(allow_nan=False, allow_infinity=False)  # NaN would encode as null
WRONG: dict[str, st.SearchStrategy[Any]] = {
    "user_id": st.booleans()
    | finite
    | st.lists(json_scalars)
    | st.dictionaries(st.text(), json_scalars),
    "event_id": st.booleans()
    | finite
    | st.lists(json_scalars)
    | st.dictionaries(st.text(), json_scalars),
    "type": st.booleans() | st.integers() | finite | st.lists(json_scalars),
    "ts": st.booleans() | st.lists(json_scalars) | st.dictionaries(st.text(), json_scalars),
    "properties": st.booleans() | st.integers() | st.text() | st.lists(json_scalars),
    "traits": st.booleans() | st.integers() | st.text() | st.lists(json_scalars),
}


@fuzz(1500)
@given(data=st.data(), field=st.sampled_from(sorted(WRONG)))
def test_one_wrong_type_is_named_by_field(data: st.DataObject, field: str):
    value = data.draw(WRONG[field])
    try:
        raw = msgspec.json.encode(base_event(**{field: value}))
    except (TypeError, ValueError, OverflowError):
        return
    result = outcome(raw)
    expected_reasons = {"wrong_type"} | ({"bad_timestamp"} if field == "ts" else set())
    assert not isinstance(result, Event), (field, value)
    assert result[0] in expected_reasons and result[1] == field, (field, value, result)


# -- the fast path agrees with the general path ---------------------------------------------

near_valid = st.fixed_dictionaries(
    {
        "user_id": st.text(max_size=6) | st.integers(-5, 10**20) | json_scalars,
        "type": st.from_regex(r"[a-z][a-z0-9_]{0,5}", fullmatch=True) | json_scalars,
        "ts": st.integers(NOW - 400 * DAY_MS, NOW + 2 * DAY_MS) | st.just(NOW) | json_scalars,
    },
    optional={
        "event_id": st.text(max_size=6) | json_scalars,
        "properties": st.dictionaries(st.text(max_size=4), json_values, max_size=3) | json_scalars,
        "traits": st.dictionaries(st.text(max_size=4), json_scalars, max_size=3) | json_scalars,
        "context": json_values,
    },
)


@fuzz(1500)
@given(obj=near_valid)
def test_bytes_bytearray_text_and_mapping_inputs_agree(obj: dict[str, Any]):
    raw = msgspec.json.encode(obj)
    via_bytes = outcome(raw)  # the fast path first
    assert via_bytes == outcome(bytearray(raw))  # the general path only
    assert via_bytes == outcome(raw.decode())
    assert via_bytes == outcome(obj)


# -- batches --------------------------------------------------------------------------------


@fuzz(500)
@given(
    size=st.integers(min_value=1, max_value=30),
    bad=st.sets(st.integers(min_value=0, max_value=29), max_size=5),
    junk=json_values,
)
def test_a_batch_names_exactly_its_bad_indexes(size: int, bad: set[int], junk: Any):
    bad = {i for i in bad if i < size}
    items = [
        {"not": "an event", "junk": junk} if i in bad else base_event(event_id=f"e{i}")
        for i in range(size)
    ]
    raw = msgspec.json.encode(items)
    try:
        events = parse_batch(raw, now_ms=NOW)
    except BatchError as exc:
        assert bad and {i for i, _ in exc.errors} == bad
    else:
        assert not bad and [e.event_id for e in events] == [f"e{i}" for i in range(size)]


# -- Segment ---------------------------------------------------------------------------------

segment_like = st.fixed_dictionaries(
    {},
    optional={
        "type": st.sampled_from(["track", "identify", "page", "screen", "alias", "group"])
        | json_values,
        "userId": st.text(max_size=6) | json_scalars,
        "anonymousId": st.text(max_size=6) | json_scalars,
        "event": st.text(max_size=20) | json_scalars,
        "name": json_scalars,
        "timestamp": st.datetimes().map(lambda d: d.isoformat()) | json_scalars,
        "messageId": json_scalars,
        "properties": json_values,
        "traits": json_values,
        "context": json_values,
    },
)


@fuzz(1200)
@given(message=segment_like | json_values, call=st.sampled_from([None, "track", "page"]))
def test_segment_messages_only_raise_event_error(message: Any, call: str | None):
    try:
        event = parse_segment_message(message, call=call, now_ms=NOW)
    except EventError as exc:
        assert exc.reason and exc.message
    else:
        assert event.user_id and event.type


@fuzz(400)
@given(
    body=st.fixed_dictionaries({"batch": st.lists(segment_like | json_values, max_size=5)})
    | json_values
)
def test_segment_batches_only_raise_batch_error(body: Any):
    try:
        batch = parse_segment_batch(body, now_ms=NOW)
    except BatchError as exc:
        assert exc.errors and all(e.reason for _, e in exc.errors)
    else:
        assert len(batch.events) + len(batch.ignored) == len(body["batch"])
