"""Events the engine cannot apply are refused at the door (issue 21 items 5 and 7).

Found: `cart_add` with `"quantity": "inf"` got 202 and then went to the events DLQ with
an OverflowError; with `quantity: 1e308` an `armed` decision was published before saving
the state failed (an integer over 2**64). A time zone such as `../../etc/passwd`, a POSIX
TZ string or one with a NUL was accepted and silently treated as UTC. A record on the
internal `events.by-user` topic was stored under its Kafka key even when its user_id
said otherwise.

Now: over HTTP a 400 names the field; on Kafka the record goes to the events DLQ with
that reason before any decision is made about it.
"""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import quote

import msgspec
import pytest

from nudgeflow.events.model import Event, encode_event
from tests.faults.hostile.conftest import Pair, eventually, get_raw
from tests.fixtures.kafka import Record, consume_all, produce

pytestmark = pytest.mark.kafka

BAD_NUMBERS: list[tuple[dict[str, Any], str]] = [
    ({"product_id": "p1", "price": 10, "quantity": "inf"}, "properties.quantity"),
    ({"product_id": "p1", "price": 10, "quantity": 1e308}, "properties.quantity"),
    ({"product_id": "p1", "price": "nan"}, "properties.price"),
    ({"product_id": "p1", "price": 10, "meta": {"n": 10**30}}, "properties.meta.n"),
]
BAD_ZONES = ["../../etc/passwd", "CET-1CEST,M3.5.0,M10.5.0/3", "Europe/Berlin\x00", "utc"]


def _now() -> int:
    return int(time.time() * 1000)


def _cart_add(user: str, props: dict[str, Any], **traits: Any) -> dict[str, Any]:
    return {
        "user_id": user,
        "type": "cart_add",
        "ts": _now(),
        "properties": props,
        "traits": traits,
    }


@pytest.mark.parametrize(("props", "field"), BAD_NUMBERS)
async def test_a_number_the_state_cannot_hold_is_a_400_naming_it(
    pair: Pair, props: dict[str, Any], field: str
) -> None:
    status, body = await pair.a.post_events([_cart_add(f"num-{pair.tag}", props)])
    assert status == 400, body
    assert body["accepted"] == 0 and [e["field"] for e in body["errors"]] == [field], body
    assert body["errors"][0]["reason"] == "out_of_range"


@pytest.mark.parametrize("zone", BAD_ZONES)
async def test_a_time_zone_that_is_not_an_iana_name_is_a_400(pair: Pair, zone: str) -> None:
    event = _cart_add(f"tz-{pair.tag}", {"product_id": "p1"}, timezone=zone)
    status, body = await pair.a.post_events([event])
    assert status == 400, body
    assert [(e["reason"], e["field"]) for e in body["errors"]] == [
        ("invalid_time_zone", "traits.timezone")
    ], body


async def test_iana_names_and_in_range_numbers_are_accepted(pair: Pair) -> None:
    events = [
        _cart_add(
            f"ok-{pair.tag}",
            {"product_id": "p1", "price": 1e12, "quantity": 10**6},
            timezone="America/Argentina/Buenos_Aires",
        ),
        _cart_add(f"ok2-{pair.tag}", {"product_id": "p1", "quantity": "3"}, timezone="UTC"),
    ]
    assert (await pair.a.post_events(events))[0] == 202


def _decisions_for(records: list[Any], user: str) -> list[dict[str, Any]]:
    out = []
    for r in records:
        d = msgspec.json.decode(r.value or b"{}")
        if d.get("user_id") == user:
            out.append(d)
    return out


async def test_on_kafka_they_go_to_the_dlq_with_the_reason_before_any_decision(
    pair: Pair,
) -> None:
    """Each bad record is followed by a `ping` for the same user (same partition, so
    handled after it): once every ping's decision is out, the bad records were handled."""
    cases = [(p, f, "out_of_range") for p, f in BAD_NUMBERS[:2]]
    cases += [({"product_id": "p1"}, "traits.timezone", "invalid_time_zone")]
    records, users = [], []
    for n, (props, _, _) in enumerate(cases):
        user = f"kafka-{n}-{pair.tag}"
        users.append(user)
        traits = {"timezone": "../../etc/passwd"} if n == 2 else {}
        bad = _cart_add(user, props, **traits) | {"event_id": f"bad-{user}"}
        ping = {"user_id": user, "type": "ping", "ts": _now(), "event_id": f"ping-{user}"}
        records += [Record(msgspec.json.encode(e), user.encode()) for e in (bad, ping)]
    await produce(pair.broker, f"{pair.prefix}.events", records)

    async def pings_decided() -> list[Any]:
        decided = await consume_all(pair.broker, f"{pair.prefix}.decisions", timeout=10)
        assert all(any(d["rule"] == "ping" for d in _decisions_for(decided, u)) for u in users)
        return decided

    decided = await eventually(pings_decided, timeout=90)
    dlq = await consume_all(pair.broker, f"{pair.prefix}.events.dlq", timeout=10)
    by_event = {msgspec.json.decode(r.value or b"{}").get("event_id"): r.headers for r in dlq}
    for user, (_, field, reason) in zip(users, cases, strict=True):
        assert [d["rule"] for d in _decisions_for(decided, user)] == ["ping"], user
        headers = by_event.get(f"bad-{user}")
        assert headers is not None, (user, sorted(map(str, by_event)))
        assert headers["nudgeflow-reason"].decode() == reason, headers
        assert headers["nudgeflow-field"].decode() == field, headers


async def test_a_by_user_record_whose_user_differs_from_its_key_is_dead_lettered(
    pair: Pair,
) -> None:
    """The internal topic is re-checked: the key says victim, the value says mallory."""
    victim, mallory = f"victim-{pair.tag}", f"mallory-{pair.tag}"
    forged = Event(
        user_id=mallory,
        type="cart_add",
        ts=_now(),
        event_id=f"forged-{victim}",
        properties={"product_id": "p1"},
        traits={"name": "mallory"},
    )
    sentinel = Event(user_id=victim, type="ping", ts=_now(), event_id=f"ping-{victim}")
    await produce(
        pair.broker,
        f"{pair.prefix}.events.by-user",
        [Record(encode_event(e), victim.encode()) for e in (forged, sentinel)],
    )
    owner = pair.owner(victim).url

    async def sentinel_applied() -> dict[str, Any]:
        status, text = await get_raw(owner, "/users/" + quote(victim, safe=""))
        assert status == 200, text
        view = msgspec.json.decode(text)
        assert any(d["rule"] == "ping" for d in view["decisions"]), view
        return view

    view = await eventually(sentinel_applied, timeout=90)
    assert view["profile"] == {} and view["cart"]["items"] == [], view
    dlq = await consume_all(pair.broker, f"{pair.prefix}.events.dlq", timeout=10)
    forged_dlq = [r for r in dlq if r.key == victim.encode()]
    assert [r.headers["nudgeflow-reason"] for r in forged_dlq] == [b"key_mismatch"]
