"""What the engine can apply and the state can hold is checked at parse time (issue 21.5,
21.7): a refused value names its field; everything else passes as before."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from nudgeflow.engine.state import encode_state, new_state
from nudgeflow.events.parse import EventError, parse_event
from nudgeflow.events.segment import parse_segment_message
from nudgeflow.events.values import MAX_AMOUNT, MAX_QUANTITY, iana_zones

NOW = 1_714_564_800_000


def _raw(props: dict[str, Any] | None = None, traits: dict[str, Any] | None = None) -> bytes:
    event = {"user_id": "u", "type": "cart_add", "ts": NOW, "properties": props or {}}
    return msgspec.json.encode({**event, "traits": traits or {}})


def _refusal(raw: bytes) -> tuple[str, str | None]:
    """(reason, field) from the fast path and the general path, which must agree."""
    answers = []
    for form in (raw, bytearray(raw)):  # bytes take the fast path, a bytearray never does
        with pytest.raises(EventError) as info:
            parse_event(form, now_ms=NOW)
        answers.append((info.value.reason, info.value.field))
    assert answers[0] == answers[1]
    return answers[0]


@pytest.mark.parametrize(
    ("props", "field"),
    [
        ({"quantity": "inf"}, "properties.quantity"),
        ({"quantity": "-Infinity"}, "properties.quantity"),
        ({"quantity": "nan"}, "properties.quantity"),
        ({"quantity": 1e308}, "properties.quantity"),
        ({"quantity": "1e308"}, "properties.quantity"),
        ({"quantity": 10**400}, "properties.quantity"),
        ({"quantity": MAX_QUANTITY + 1}, "properties.quantity"),
        ({"price": "nan"}, "properties.price"),
        ({"price": MAX_AMOUNT * 1.01}, "properties.price"),
        ({"cart_value": "inf"}, "properties.cart_value"),
        ({"total": -1e300}, "properties.total"),
        ({"revenue": "1e400"}, "properties.revenue"),
        ({"value": "-nan"}, "properties.value"),
        ({"meta": {"n": 2**64}}, "properties.meta.n"),
        ({"items": [1, {"qty": -(2**63) - 1}]}, "properties.items[1].qty"),
    ],
)
def test_numbers_the_engine_cannot_apply_are_refused_naming_the_field(
    props: dict[str, Any], field: str
) -> None:
    assert _refusal(_raw(props)) == ("out_of_range", field)


def test_a_trait_integer_beyond_64_bits_is_refused() -> None:
    assert _refusal(_raw(traits={"score": -(2**70)})) == ("out_of_range", "traits.score")


@pytest.mark.parametrize(
    "props",
    [
        {"quantity": 3, "price": 19.99},
        {"quantity": "2", "price": "19.99", "total": "39.98"},
        {"quantity": MAX_QUANTITY, "price": -MAX_AMOUNT, "cart_value": 0},
        {"quantity": "a few", "price": "call us", "value": "gold"},  # not numbers: ignored
        {"quantity": None, "price": True, "total": [1], "revenue": {"x": 1}},
        {"n": 2**64 - 1, "m": -(2**63), "f": 1e308, "s": "inf"},  # not read as numbers
    ],
)
def test_storable_values_pass_and_the_state_encodes(props: dict[str, Any]) -> None:
    event = parse_event(_raw(props), now_ms=NOW)
    state = new_state("u")
    state.profile.update(event.traits)
    state.profile["props"] = event.properties  # as arm_props keeps them
    encode_state(state)


@pytest.mark.parametrize(
    "zone",
    [
        "../../etc/passwd",
        "/usr/share/zoneinfo/UTC",
        "CET-1CEST,M3.5.0,M10.5.0/3",
        "EST5",
        "Europe/Berlin\x00",
        "europe/berlin",
        "utc",
        "localtime",
        "posixrules",
        "",
        " UTC",
        "Mars/Olympus_Mons",
        5,
        {"name": "UTC"},
    ],
)
def test_a_time_zone_must_be_an_iana_name(zone: Any) -> None:
    assert _refusal(_raw(traits={"timezone": zone})) == ("invalid_time_zone", "traits.timezone")


@pytest.mark.parametrize(
    "zone", ["Europe/Berlin", "America/Argentina/Buenos_Aires", "UTC", "Etc/GMT+5", None]
)
def test_iana_names_and_null_pass(zone: str | None) -> None:
    event = parse_event(_raw(traits={"timezone": zone}), now_ms=NOW)
    assert event.traits == {"timezone": zone}


def test_the_zone_list_is_the_tz_database() -> None:
    zones = iana_zones()
    assert {"Europe/Berlin", "Asia/Kolkata", "UTC"} <= zones and len(zones) > 400
    assert "localtime" not in zones


def test_a_timezone_property_is_not_a_trait() -> None:
    assert parse_event(_raw({"timezone": "whatever"}), now_ms=NOW).properties["timezone"]


def test_segment_context_timezone_is_checked_like_a_trait() -> None:
    message = {"userId": "u", "event": "Viewed", "context": {"timezone": "../../etc/passwd"}}
    with pytest.raises(EventError) as info:
        parse_segment_message(message, call="track", now_ms=NOW)
    assert (info.value.reason, info.value.field) == ("invalid_time_zone", "traits.timezone")
