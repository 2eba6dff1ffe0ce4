"""Where a raw record goes (apply here, re-key, DLQ), and the re-check of the internal
`events.by-user` topic against its key (issue 21 item 7)."""

from __future__ import annotations

import msgspec

from nudgeflow.agents.router import Apply, Reject, Reroute, partition_for, rekeyed, route
from nudgeflow.events.model import Event, encode_event
from nudgeflow.events.parse import EventLimits

NOW = 1_714_564_800_000
LIMITS = EventLimits()


def _raw(user: str, **props: object) -> bytes:
    event = {"user_id": user, "type": "cart_add", "ts": NOW, "properties": props}
    return msgspec.json.encode(event)


def test_a_record_keyed_by_its_user_in_the_right_partition_is_applied_in_place() -> None:
    p = partition_for(b"ana", 4)
    assert isinstance(route(b"ana", _raw("ana"), p, 4, now_ms=NOW, limits=LIMITS), Apply)
    other = (p + 1) % 4
    assert isinstance(route(b"ana", _raw("ana"), other, 4, now_ms=NOW, limits=LIMITS), Reroute)
    assert isinstance(route(None, _raw("ana"), p, 4, now_ms=NOW, limits=LIMITS), Reroute)


def test_a_record_the_engine_cannot_apply_is_rejected_with_the_field() -> None:
    routed = route(b"ana", _raw("ana", quantity="inf"), 0, 4, now_ms=NOW, limits=LIMITS)
    assert isinstance(routed, Reject)
    assert (routed.error.reason, routed.error.field) == ("out_of_range", "properties.quantity")


def test_a_rekeyed_record_keyed_by_its_user_is_applied() -> None:
    event = Event(user_id="ana", type="cart_add", ts=NOW, traits={"timezone": "Europe/Berlin"})
    assert rekeyed(b"ana", encode_event(event), limits=LIMITS) == Apply(event, b"ana")


def test_a_rekeyed_record_whose_user_is_not_its_key_is_rejected() -> None:
    forged = encode_event(Event(user_id="mallory", type="cart_add", ts=NOW))
    for key in (b"victim", None, b"mallory\x00"):
        routed = rekeyed(key, forged, limits=LIMITS)
        assert isinstance(routed, Reject), key
        assert (routed.error.reason, routed.error.field) == ("key_mismatch", "user_id")


def test_a_rekeyed_record_is_validated_again_but_not_for_age() -> None:
    old = Event(user_id="ana", type="ping", ts=NOW - 400 * 86_400_000)
    assert isinstance(rekeyed(b"ana", encode_event(old), limits=LIMITS), Apply)
    bad_zone = _raw("ana").replace(b'"properties"', b'"traits":{"timezone":"../x"},"properties"')
    assert rekeyed(b"ana", bad_zone, limits=LIMITS).error.reason == "invalid_time_zone"  # type: ignore[union-attr]
    assert rekeyed(b"ana", b"not json", limits=LIMITS).error.reason == "invalid_json"  # type: ignore[union-attr]
    assert rekeyed(b"ana", None, limits=LIMITS).error.reason == "missing_value"  # type: ignore[union-attr]
