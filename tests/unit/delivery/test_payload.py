import msgspec

from nudgeflow.delivery.payload import MAX_BODY_BYTES, encode_payload
from nudgeflow.engine.actions import Trigger
from tests import factories


def make_trigger(message: str = "Your cart misses you", **fields: object) -> Trigger:
    return factories.trigger(
        "t-1",
        user_id="ana",
        message=message,
        fields={
            "user_name": "Ana",
            "cart_value": 79.5,
            "cart_item_count": 2,
            "cart_first_item_name": "Boots",
            **fields,
        },
    )


def test_flat_body_has_core_and_cart_fields() -> None:
    body = msgspec.json.decode(encode_payload(make_trigger()))
    assert body["trigger_id"] == "t-1"
    assert body["user_id"] == "ana"
    assert body["cart_value"] == 79.5
    assert body["cart_first_item_name"] == "Boots"
    assert body["fired_at"] == "2026-01-01T10:30:00Z"
    assert "destinations" not in body and "send" not in body
    assert all(not isinstance(v, (dict, list)) for v in body.values())


def test_bytes_are_deterministic_and_sorted() -> None:
    a, b = encode_payload(make_trigger()), encode_payload(make_trigger())
    assert a == b
    keys = list(msgspec.json.decode(a))
    assert keys == sorted(keys)


def test_long_message_is_truncated_under_limit() -> None:
    body = encode_payload(make_trigger(message="x" * 50_000))
    assert len(body) <= MAX_BODY_BYTES
    message = msgspec.json.decode(body)["message"]
    assert message.startswith("xxx") and message.endswith("…")
    assert len(body) > MAX_BODY_BYTES - 100  # kept as much as fits


def test_huge_extras_are_dropped_but_core_kept() -> None:
    body = encode_payload(make_trigger(user_bio="y" * 30_000))
    decoded = msgspec.json.decode(body)
    assert len(body) <= MAX_BODY_BYTES
    assert "user_bio" not in decoded
    assert decoded["message"] == "Your cart misses you"
    assert decoded["cart_value"] == 79.5


def test_empty_message_is_never_sent_empty() -> None:
    decoded = msgspec.json.decode(encode_payload(make_trigger(message="")))
    assert decoded["message"]
