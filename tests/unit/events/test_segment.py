"""Segment HTTP Tracking API calls become our events; refusals name Segment's fields."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from nudgeflow.events.model import Event
from nudgeflow.events.parse import BatchError, EventError, parse_event
from nudgeflow.events.segment import (
    KNOWN_ID,
    MERGE_EVENT,
    MERGE_ID,
    event_type_for,
    merge_id_for,
    parse_segment_batch,
    parse_segment_call,
    parse_segment_message,
    snake_case,
)

NOW = 1_714_564_800_000  # 2024-05-01T12:00:00Z
TS = "2024-05-01T11:00:00.000+00:00"
TS_MS = NOW - 3600_000


def track(event: str, **fields: Any) -> dict[str, Any]:
    return {"type": "track", "userId": "u1", "event": event, "timestamp": TS, **fields}


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("Product Viewed", "product_view"),
        ("Product Added", "cart_add"),
        ("Product Removed", "cart_remove"),
        ("Cart Viewed", "cart_view"),
        ("Checkout Started", "checkout_started"),
        ("Order Completed", "purchase"),
        ("Signed Up", "signup"),
        ("Signed In", "login"),
        ("Signed Out", "logout"),
        ("Unsubscribed", "unsubscribe"),
        ("order completed", "purchase"),
        ("orderCompleted", "purchase"),
        ("Video Played", "video_played"),
        ("Coupon Applied!", "coupon_applied"),
        ("HTMLExported", "html_exported"),
        ("  Trial -- Started  ", "trial_started"),
    ],
)
def test_event_names_map_to_our_types(name: str, expected: str) -> None:
    assert event_type_for(name) == expected


def test_snake_case_is_truncated_to_a_valid_type_length() -> None:
    assert len(snake_case("Very " * 40)) <= 64
    assert not snake_case("Very " * 40).endswith("_")


def test_track_product_added_becomes_cart_add_with_canonical_properties() -> None:
    message = track(
        "Product Added",
        messageId="msg-1",
        properties={"sku": "SKU-9", "name": "Red shoes", "price": 59.9, "quantity": 1},
        context={"timezone": "Europe/Lisbon", "traits": {"email": "ana@example.com"}},
    )
    assert parse_segment_message(message, call=None, now_ms=NOW) == Event(
        user_id="u1",
        type="cart_add",
        ts=TS_MS,
        event_id="msg-1",
        properties={
            "sku": "SKU-9",
            "name": "Red shoes",
            "price": 59.9,
            "quantity": 1,
            "product_name": "Red shoes",
            "product_id": "SKU-9",
        },
        traits={"email": "ana@example.com", "timezone": "Europe/Lisbon"},
    )


def test_existing_canonical_properties_are_not_overwritten() -> None:
    message = track(
        "Product Viewed",
        properties={"product_id": "p1", "sku": "s1", "name": "N", "product_name": "Mine"},
    )
    props = parse_segment_message(message, call=None, now_ms=NOW).properties
    assert (props["product_id"], props["product_name"]) == ("p1", "Mine")


def test_checkout_started_value_becomes_cart_value_but_purchase_total_does_not() -> None:
    checkout = parse_segment_message(
        track("Checkout Started", properties={"value": 80, "revenue": 70}), call=None, now_ms=NOW
    )
    assert checkout.properties["cart_value"] == 80
    purchase = parse_segment_message(
        track("Order Completed", properties={"total": 99.5, "order_id": "o1"}),
        call=None,
        now_ms=NOW,
    )
    assert purchase.type == "purchase"
    assert purchase.properties == {"total": 99.5, "order_id": "o1"}


def test_identify_merges_context_traits_and_snake_cases_names() -> None:
    message = {
        "userId": 1234,
        "traits": {"firstName": "Ana", "email": "ana@example.com"},
        "context": {
            "traits": {"plan": "pro", "email": "old@example.com"},
            "timezone": "Asia/Tokyo",
        },
        "timestamp": TS,
        "messageId": "m2",
    }
    event = parse_segment_message(message, call="identify", now_ms=NOW)
    assert (event.user_id, event.type, event.event_id) == ("1234", "identify", "m2")
    assert event.traits == {
        "plan": "pro",
        "email": "ana@example.com",
        "firstName": "Ana",
        "first_name": "Ana",
        "timezone": "Asia/Tokyo",
    }


def test_page_becomes_page_view_with_name_and_category() -> None:
    message = {
        "anonymousId": "anon-7",
        "name": "Pricing",
        "category": "Docs",
        "properties": {"path": "/p"},
    }
    event = parse_segment_message(message, call="page", now_ms=NOW)
    assert (event.user_id, event.type, event.ts) == ("anon-7", "page_view", NOW)
    assert event.properties == {"path": "/p", "name": "Pricing", "category": "Docs"}


def test_user_id_wins_over_anonymous_id_and_original_timestamp_is_a_fallback() -> None:
    message = {"userId": "u9", "anonymousId": "a1", "event": "Signed In", "originalTimestamp": TS}
    event = parse_segment_message(message, call="track", now_ms=NOW)
    assert (event.user_id, event.type, event.ts) == ("u9", "login", TS_MS)


@pytest.mark.parametrize(
    ("message", "call", "reason", "field"),
    [
        ({"event": "Signed In"}, "track", "missing_field", "userId"),
        ({"userId": "", "anonymousId": None, "event": "x"}, "track", "missing_field", "userId"),
        ({"userId": True, "event": "x"}, "track", "wrong_type", "userId"),
        ({"userId": "u" * 300, "event": "x"}, "track", "too_long", "userId"),
        ({"userId": "u"}, "track", "missing_field", "event"),
        ({"userId": "u", "event": 5}, "track", "wrong_type", "event"),
        ({"userId": "u", "event": "  "}, "track", "empty_field", "event"),
        ({"userId": "u", "event": "3D Viewed"}, "track", "invalid_type_name", "event"),
        ({"userId": "u", "event": "商品"}, "track", "invalid_type_name", "event"),
        (
            {"userId": "u", "event": "x", "timestamp": "later"},
            "track",
            "bad_timestamp",
            "timestamp",
        ),
        (
            {"userId": "u", "event": "x", "timestamp": "1990-01-01T00:00:00Z"},
            "track",
            "timestamp_out_of_range",
            "timestamp",
        ),
        ({"userId": "u", "event": "x", "messageId": ""}, "track", "empty_field", "messageId"),
        ({"userId": "u", "event": "x", "properties": [1]}, "track", "wrong_type", "properties"),
        ({"userId": "u", "traits": "vip"}, "identify", "wrong_type", "traits"),
        ({"userId": "u", "context": 5}, "identify", "wrong_type", "context"),
        ({"userId": "u", "context": {"traits": []}}, "page", "wrong_type", "context.traits"),
        ({"userId": "u"}, None, "missing_field", "type"),
        ({"userId": "u", "type": "video"}, None, "unsupported_call", "type"),
        ("not an object", "track", "not_an_object", None),
    ],
)
def test_bad_calls_name_the_segment_field(
    message: Any, call: str | None, reason: str, field: str | None
) -> None:
    with pytest.raises(EventError) as info:
        parse_segment_message(message, call=call, now_ms=NOW)
    assert (info.value.reason, info.value.field) == (reason, field)


def test_batch_maps_each_call_applies_batch_context_and_reports_ignored_calls() -> None:
    body = {
        "batch": [
            track("Product Viewed", messageId="a"),
            {"type": "identify", "userId": "u1", "traits": {"name": "Ana"}, "messageId": "b"},
            {"type": "alias", "previousId": "anon", "userId": "u1"},
            {"type": "group", "userId": "u1", "groupId": "g"},
            {"type": "page", "userId": "u1", "messageId": "c", "timestamp": TS},
        ],
        "context": {"timezone": "Europe/Paris"},
        "writeKey": "wk",
    }
    batch = parse_segment_batch(body, now_ms=NOW)
    assert [(e.type, e.event_id) for e in batch.events] == [
        ("product_view", "a"),
        ("identify", "b"),
        ("identify_merge", None),  # the alias: a merge request keyed by the previous id
        ("page_view", "c"),
    ]
    assert all(e.traits["timezone"] == "Europe/Paris" for e in batch.events if e.traits)
    assert batch.ignored == [{"index": 3, "type": "group", "reason": "unsupported_call"}]


def test_batch_is_all_or_nothing_and_lists_every_bad_call() -> None:
    body = {"batch": [track("A"), {"type": "track", "event": "B"}, track("C", timestamp="x"), 5]}
    with pytest.raises(BatchError) as info:
        parse_segment_batch(body, now_ms=NOW)
    assert [(i, e.reason, e.field) for i, e in info.value.errors] == [
        (1, "missing_field", "userId"),
        (2, "bad_timestamp", "timestamp"),
        (3, "not_an_object", None),
    ]


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ([], "not_an_object"),
        ({}, "missing_field"),
        ({"batch": {}}, "missing_field"),
        ({"batch": [track("x")] * 3}, "too_many_events"),
    ],
)
def test_batch_body_problems(body: Any, reason: str) -> None:
    with pytest.raises(BatchError) as info:
        parse_segment_batch(body, now_ms=NOW, max_batch=2)
    assert [(i, e.reason) for i, e in info.value.errors] == [(None, reason)]


# -- identity (issue 19.2): calls that link an anonymous id to a user id -----------------


@pytest.mark.parametrize("call", ["identify", "track", "page"])
def test_a_call_with_both_ids_also_asks_to_merge_the_anonymous_profile(call: str) -> None:
    message = {"type": call, "userId": "kim", "anonymousId": "anon-1", "messageId": "m1",
               "timestamp": TS, "event": "Signed In", "traits": {"email": "kim@x.io"}}  # fmt: skip
    own, merge = parse_segment_call(message, call=None, now_ms=NOW)
    assert own.user_id == "kim"
    assert (merge.user_id, merge.type, merge.ts, merge.event_id) == (
        "anon-1", MERGE_EVENT, own.ts, "m1:merge"
    )  # fmt: skip
    assert merge.properties == {KNOWN_ID: "kim", MERGE_ID: merge_id_for("anon-1", "kim", "m1")}
    again = parse_segment_call(message, call=None, now_ms=NOW + 5000)  # a retried call
    assert again[1].properties[MERGE_ID] == merge.properties[MERGE_ID]


@pytest.mark.parametrize(
    "message",
    [
        {"type": "track", "userId": "kim", "event": "X"},
        {"type": "track", "anonymousId": "anon-1", "event": "X"},
        {"type": "track", "userId": "kim", "anonymousId": "kim", "event": "X"},
        {"type": "track", "userId": "kim", "anonymousId": "", "event": "X"},
    ],
)
def test_a_call_with_one_id_is_one_event(message: dict[str, Any]) -> None:
    assert len(parse_segment_call(message, call=None, now_ms=NOW)) == 1


def test_alias_is_only_a_merge_request_and_an_alias_to_itself_is_nothing() -> None:
    [merge] = parse_segment_call(
        {"previousId": "anon-1", "userId": 42, "messageId": "m2"}, call="alias", now_ms=NOW
    )
    assert (merge.user_id, merge.properties[KNOWN_ID]) == ("anon-1", "42")
    assert (
        parse_segment_call({"previousId": "kim", "userId": "kim"}, call="alias", now_ms=NOW) == []
    )
    batch = parse_segment_batch(
        {"batch": [{"type": "alias", "previousId": "k", "userId": "k"}]}, now_ms=NOW
    )
    assert batch.events == [] and batch.ignored == [
        {"index": 0, "type": "alias", "reason": "self_alias"}
    ]


@pytest.mark.parametrize(
    ("message", "reason", "field"),
    [
        ({"userId": "kim"}, "missing_field", "previousId"),
        ({"previousId": "anon"}, "missing_field", "userId"),
        ({"previousId": "anon", "userId": {"x": 1}}, "wrong_type", "userId"),
        ({"previousId": "a" * 1000, "userId": "kim"}, "too_long", "previousId"),
        ({"previousId": "anon", "userId": "kim", "timestamp": "soon"}, "bad_timestamp",
         "timestamp"),
    ],
)  # fmt: skip
def test_bad_alias_calls_name_the_segment_field(
    message: dict[str, Any], reason: str, field: str
) -> None:
    with pytest.raises(EventError) as info:
        parse_segment_call(message, call="alias", now_ms=NOW)
    assert (info.value.reason, info.value.field) == (reason, field)


@pytest.mark.parametrize(
    ("properties", "reason", "field"),
    [
        ({"merge_id": "m"}, "missing_field", "properties.known_id"),
        ({"known_id": "\x00x", "merge_id": "m"}, "invalid_characters", "properties.known_id"),
        ({"known_id": "k" * 300, "merge_id": "m"}, "too_long", "properties.known_id"),
        ({"known_id": 7, "merge_id": "m"}, "wrong_type", "properties.known_id"),
        ({"known_id": "kim"}, "missing_field", "properties.merge_id"),
    ],
)
def test_a_merge_request_from_any_producer_names_a_valid_known_id(
    properties: dict[str, Any], reason: str, field: str
) -> None:
    """The known id becomes a key and a state: checked like a user id, on both paths."""
    raw = {"user_id": "anon", "type": "identify_merge", "ts": NOW, "properties": properties}
    for body in (raw, msgspec.json.encode(raw)):
        with pytest.raises(EventError) as info:
            parse_event(body, now_ms=NOW)
        assert (info.value.reason, info.value.field) == (reason, field)
    good = {**raw, "properties": {"known_id": "kim", "merge_id": "m"}}
    assert parse_event(msgspec.json.encode(good), now_ms=NOW).properties["known_id"] == "kim"
