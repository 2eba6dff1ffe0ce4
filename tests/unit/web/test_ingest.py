"""Ingestion views over real HTTP: what is stored, what is refused and why."""

from __future__ import annotations

import base64
import gzip
import json
import os
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nudgeflow.observability import metrics
from nudgeflow.web.ingest import IngestOptions, wall_clock_ms
from tests.unit.web.conftest import NOW, RecordingSink, Server, serve

GOOD: dict[str, Any] = {"user_id": "u1", "type": "cart_add", "ts": NOW - 1000}


def event(i: int = 0, **fields: Any) -> dict[str, Any]:
    return {**GOOD, "event_id": f"e{i}", "user_id": f"u{i % 7}", **fields}


def sample(name: str, **labels: str) -> float:
    return metrics.REGISTRY.get_sample_value(name, labels) or 0.0


def basic(key: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()}


# -- POST /events ------------------------------------------------------------------


def test_one_event_is_stored_and_acknowledged(server: Server) -> None:
    url, sink = server()
    received = sample("nudgeflow_events_received_total", source="http")
    resp = requests.post(f"{url}/events", json=event(1, properties={"price": 60}))
    assert (resp.status_code, resp.json()) == (202, {"accepted": 1})
    assert [(e.event_id, e.user_id, e.properties) for e in sink.events] == [
        ("e1", "u1", {"price": 60})
    ]
    assert sample("nudgeflow_events_received_total", source="http") == received + 1


def test_batch_of_500_is_stored_in_one_send_in_order(server: Server) -> None:
    url, sink = server()
    batch = [event(i) for i in range(500)]
    resp = requests.post(f"{url}/events", json=batch)
    assert (resp.status_code, resp.json()) == (202, {"accepted": 500})
    assert len(sink.calls) == 1
    assert [e.event_id for e in sink.events] == [f"e{i}" for i in range(500)]


def test_empty_array_accepts_nothing_without_calling_the_sink(server: Server) -> None:
    url, sink = server()
    resp = requests.post(f"{url}/events", json=[])
    assert (resp.status_code, resp.json()) == (202, {"accepted": 0})
    assert sink.calls == []


def test_bad_events_are_listed_by_index_and_field_and_nothing_is_stored(server: Server) -> None:
    url, sink = server()
    batch = [event(i) for i in range(10)]
    batch[1] = event(1, ts="next tuesday")
    batch[4] = {k: v for k, v in event(4).items() if k != "user_id"}
    batch[7] = event(7, type="Product Viewed", properties=[1])
    rejected = sample("nudgeflow_events_rejected_total", source="http", reason="bad_timestamp")
    resp = requests.post(f"{url}/events", json=batch)
    assert resp.status_code == 400
    body = resp.json()
    assert body["accepted"] == 0
    assert [(e["index"], e["field"], e["reason"]) for e in body["errors"]] == [
        (1, "ts", "bad_timestamp"),
        (4, "user_id", "missing_field"),
        (7, "type", "invalid_type_name"),
    ]
    assert all(e["message"] for e in body["errors"])
    assert sink.calls == []
    assert sample("nudgeflow_events_rejected_total", source="http", reason="bad_timestamp") == (
        rejected + 1
    )


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"{not json", "invalid_json"),
        (b"\xff\xfe\x00", "invalid_encoding"),
        (b"42", "not_an_object"),
        (json.dumps([GOOD] * 1001).encode(), "too_many_events"),
        (json.dumps({**GOOD, "ts": "1999-01-01T00:00:00Z"}).encode(), "timestamp_out_of_range"),
    ],
)
def test_malformed_bodies_get_400_with_the_reason(server: Server, body: bytes, reason: str) -> None:
    url, sink = server()
    resp = requests.post(f"{url}/events", data=body, headers={"Content-Type": "application/json"})
    assert resp.status_code == 400
    assert [e["reason"] for e in resp.json()["errors"]] == [reason]
    assert sink.calls == []


def test_body_over_one_mib_is_413_whether_sized_or_chunked(server: Server) -> None:
    url, sink = server()
    big = json.dumps([event(i, properties={"pad": "x" * 2000}) for i in range(520)]).encode()
    assert len(big) > 1024 * 1024
    sized = requests.post(f"{url}/events", data=big, headers={"Content-Type": "application/json"})
    assert sized.status_code == 413
    assert sized.json()["code"] == "too_large"
    chunked = requests.post(
        f"{url}/events",
        data=(big[i : i + 65536] for i in range(0, len(big), 65536)),
        headers={"Content-Type": "application/json"},
    )
    assert chunked.status_code == 413
    assert sink.calls == []


def test_one_event_over_the_event_limit_is_413(server: Server) -> None:
    url, sink = server()
    resp = requests.post(f"{url}/events", json=event(properties={"pad": "x" * 70_000}))
    assert resp.status_code == 413
    assert [e["reason"] for e in resp.json()["errors"]] == ["too_large"]
    assert sink.calls == []


def test_gzip_bodies_are_inflated_and_a_gzip_bomb_is_413(server: Server) -> None:
    url, sink = server()
    headers = {"Content-Type": "application/json", "Content-Encoding": "gzip"}
    ok = requests.post(
        f"{url}/events", data=gzip.compress(json.dumps([event(1)]).encode()), headers=headers
    )
    assert (ok.status_code, ok.json()) == (202, {"accepted": 1})
    bomb = gzip.compress(b"[" + b" " * (8 * 1024 * 1024) + b"]")
    assert len(bomb) < 64 * 1024
    assert requests.post(f"{url}/events", data=bomb, headers=headers).status_code == 413
    assert len(sink.events) == 1


@pytest.mark.parametrize(
    ("content_type", "status"),
    [
        ("application/json", 202),
        ("application/json; charset=utf-8", 202),
        ("text/plain", 415),  # the type a foreign page may send unasked (web/origins.py)
        ("application/vnd.api+json", 202),
        (None, 202),
        ("application/x-www-form-urlencoded", 415),
        ("multipart/form-data; boundary=x", 415),
        ("text/csv", 415),
    ],
)
def test_content_types(server: Server, content_type: str | None, status: int) -> None:
    url, sink = server()
    headers = {"Content-Type": content_type} if content_type else {}
    session = requests.Session()
    request = requests.Request("POST", f"{url}/events", data=json.dumps(GOOD), headers=headers)
    prepared = session.prepare_request(request)
    if content_type is None:
        prepared.headers.pop("Content-Type", None)
    resp = session.send(prepared)
    assert resp.status_code == status
    assert len(sink.events) == (1 if status == 202 else 0)
    if status == 415:
        assert resp.json()["code"] == "unsupported_media_type"


def test_sink_unavailable_is_503_and_never_202(server: Server) -> None:
    url, sink = server()
    sink.available = False
    resp = requests.post(f"{url}/events", json=[event(1), event(2)])
    assert resp.status_code == 503
    assert resp.json()["error"] == "event store unavailable, retry later"
    assert resp.headers["Retry-After"].isdigit()
    sink.available = True
    assert requests.post(f"{url}/events", json=[event(1)]).status_code == 202


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({}, 401),
        ({"Authorization": "Bearer wrong"}, 401),
        ({"Authorization": "Bearer s3cret-but-longer"}, 401),
        ({"Authorization": "Basic czNjcmV0Og=="}, 401),  # the token as a Basic user is not a bearer
        ({"Authorization": "Bearer s3cret"}, 202),
        ({"Authorization": "bearer  s3cret "}, 202),
    ],
)
def test_bearer_token(server: Server, headers: dict[str, str], status: int) -> None:
    url, sink = server(api_token="s3cret")
    resp = requests.post(f"{url}/events", json=GOOD, headers=headers)
    assert resp.status_code == status
    if status == 401:
        assert resp.headers["WWW-Authenticate"].startswith("Bearer")
        assert sink.calls == []


# -- Segment -------------------------------------------------------------------------


def test_segment_track_and_batch(server: Server) -> None:
    url, sink = server()
    track: dict[str, Any] = {
        "userId": "u1",
        "event": "Order Completed",
        "timestamp": "2024-05-01T11:00:00Z",
        "messageId": "m1",
        "properties": {"total": 120},
    }
    resp = requests.post(f"{url}/v1/track", json=track, headers=basic("any-key"))
    assert (resp.status_code, resp.json()) == (202, {"accepted": 1, "success": True})
    batch: dict[str, Any] = {
        "batch": [
            {**track, "type": "track", "messageId": "m2"},
            {"type": "alias", "userId": "u1", "previousId": "a"},
            {"type": "identify", "userId": "u1", "traits": {"email": "a@b.c"}},
        ]
    }
    resp = requests.post(f"{url}/v1/batch", json=batch, headers=basic("any-key"))
    assert resp.status_code == 202
    assert resp.json() == {"accepted": 3, "success": True}
    assert [(e.user_id, e.type, e.event_id) for e in sink.events] == [
        ("u1", "purchase", "m1"),
        ("u1", "purchase", "m2"),
        ("a", "identify_merge", None),  # the alias: merge `a` into u1 (issue 19.2)
        ("u1", "identify", None),
    ]


def test_segment_alias_route_stores_a_merge_request_and_ignores_a_self_alias(
    server: Server,
) -> None:
    url, sink = server()
    alias = {"previousId": "anon-1", "userId": "kim", "messageId": "m9"}
    resp = requests.post(f"{url}/v1/alias", json=alias, headers=basic("any-key"))
    assert (resp.status_code, resp.json()) == (202, {"accepted": 1, "success": True})
    [merge] = sink.events
    assert (merge.user_id, merge.type, merge.properties["known_id"]) == (
        "anon-1", "identify_merge", "kim"
    )  # fmt: skip
    itself = {"previousId": "kim", "userId": "kim"}
    resp = requests.post(f"{url}/v1/a", json=itself, headers=basic("any-key"))
    assert resp.status_code == 202
    assert resp.json()["ignored"] == [{"index": 0, "type": "alias", "reason": "self_alias"}]
    resp = requests.post(f"{url}/v1/alias", json={"userId": "kim"}, headers=basic("any-key"))
    assert resp.status_code == 400
    assert resp.json()["errors"][0]["field"] == "previousId"
    assert len(sink.events) == 1


def test_segment_bad_calls_are_400_with_segment_field_names(server: Server) -> None:
    url, sink = server()
    batch = {
        "batch": [{"type": "track", "userId": "u", "event": "ok"}, {"type": "track", "event": "x"}]
    }
    resp = requests.post(f"{url}/v1/batch", json=batch)
    assert resp.status_code == 400
    body = resp.json()
    assert [(e["index"], e["field"], e["reason"]) for e in body["errors"]] == [
        (1, "userId", "missing_field")
    ]
    assert body["code"] and body["message"]  # what Segment's SDKs log
    assert sink.calls == []


@pytest.mark.parametrize(
    ("write_keys", "token", "headers", "body_key", "status"),
    [
        (frozenset(), None, {}, None, 202),
        (frozenset(), None, basic("anything"), None, 202),
        (frozenset({"wk1", "wk2"}), None, basic("wk2"), None, 202),
        (frozenset({"wk1", "wk2"}), None, basic("nope"), None, 401),
        (frozenset({"wk1", "wk2"}), None, {}, None, 401),
        (frozenset({"wk1", "wk2"}), None, {}, "wk1", 202),
        (frozenset({"wk1", "wk2"}), None, {}, "bad", 401),
        (frozenset(), "tok", basic("anything"), None, 401),
        (frozenset(), "tok", {}, None, 401),
        (frozenset(), "tok", basic("tok"), None, 202),
        (frozenset(), "tok", {"Authorization": "Bearer tok"}, None, 202),
        (frozenset({"wk1"}), "tok", basic("wk1"), None, 202),
    ],
)
def test_segment_write_keys(
    server: Server,
    write_keys: frozenset[str],
    token: str | None,
    headers: dict[str, str],
    body_key: str | None,
    status: int,
) -> None:
    url, sink = server(segment_write_keys=write_keys, api_token=token)
    call: dict[str, Any] = {"userId": "u1", "event": "Signed In"}
    if body_key:
        call["writeKey"] = body_key
    resp = requests.post(f"{url}/v1/track", json=call, headers=headers)
    assert resp.status_code == status
    assert len(sink.events) == (1 if status == 202 else 0)


def test_segment_unavailable_sink_is_503(server: Server) -> None:
    url, sink = server()
    sink.available = False
    resp = requests.post(f"{url}/v1/identify", json={"userId": "u1", "traits": {}})
    assert resp.status_code == 503


def test_segment_python_library_delivers_track_and_identify(server: Server) -> None:
    from segment.analytics import Client

    # the SDK stamps calls with the real time, so this server uses the wall clock
    url, sink = server(segment_write_keys=frozenset({"wk-live"}), clock=wall_clock_ms)
    errors: list[Exception] = []
    for use_gzip in (False, True):
        client = Client(
            "wk-live",
            host=url,
            sync_mode=True,
            gzip=use_gzip,
            max_retries=0,
            on_error=lambda exc, _batch: errors.append(exc),
        )
        client.identify("user-42", {"email": "ana@example.com", "firstName": "Ana"})
        client.track("user-42", "Product Added", {"product_id": "p1", "price": 60, "quantity": 1})
        client.track("user-42", "Order Completed", {"order_id": "o1", "total": 60})
        client.page("user-42", "Docs", "Pricing")
    assert errors == []
    assert [e.type for e in sink.events] == ["identify", "cart_add", "purchase", "page_view"] * 2
    identify, cart_add = sink.events[0], sink.events[1]
    assert identify.user_id == "user-42"
    assert identify.traits["email"] == "ana@example.com"
    assert identify.traits["first_name"] == "Ana"
    assert cart_add.properties == {"product_id": "p1", "price": 60, "quantity": 1}
    assert all(e.event_id for e in sink.events)  # messageId -> event_id
    assert len({e.event_id for e in sink.events}) == 8

    wrong = Client("wk-stolen", host=url, sync_mode=True, max_retries=0)
    from segment.analytics.request import APIError

    with pytest.raises(APIError) as info:
        wrong.track("user-42", "Product Added")
    assert info.value.status == 401
    assert len(sink.events) == 8


# -- WebSocket ---------------------------------------------------------------------------


async def test_websocket_acks_every_message_and_survives_bad_ones(server: Server) -> None:
    url, sink = server()
    async with aiohttp.ClientSession() as session, session.ws_connect(f"{url}/ws/events") as ws:
        await ws.send_json(event(1))
        assert await ws.receive_json() == {"ok": True, "seq": 1, "event_id": "e1"}
        await ws.send_str("{broken")
        bad = await ws.receive_json()
        assert (bad["ok"], bad["seq"], bad["errors"][0]["reason"]) == (False, 2, "invalid_json")
        await ws.send_json({"user_id": "u1", "type": "cart_add"})
        missing = await ws.receive_json()
        assert missing["errors"] == [
            {"reason": "missing_field", "field": "ts", "message": "ts is required"}
        ]
        await ws.send_bytes(json.dumps(event(2)).encode())
        assert await ws.receive_json() == {"ok": True, "seq": 4, "event_id": "e2"}
        sink.available = False
        await ws.send_json(event(3))
        down = await ws.receive_json()
        assert (down["ok"], down["retry"], down["errors"][0]["reason"]) == (
            False,
            True,
            "store_unavailable",
        )
        sink.available = True
        await ws.send_json(GOOD)
        assert await ws.receive_json() == {"ok": True, "seq": 6, "event_id": None}
    assert [e.event_id for e in sink.events] == ["e1", "e2", None]


async def test_websocket_requires_the_token_by_header_or_query(server: Server) -> None:
    url, sink = server(api_token="s3cret")
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.WSServerHandshakeError) as info:
            await session.ws_connect(f"{url}/ws/events")
        assert info.value.status == 401
        bearer = {"Authorization": "Bearer s3cret"}
        async with session.ws_connect(f"{url}/ws/events", headers=bearer) as ws:
            await ws.send_json(event(1))
            assert (await ws.receive_json())["ok"] is True
        async with session.ws_connect(f"{url}/ws/events?access_token=s3cret") as ws:
            await ws.send_json(event(2))
            assert (await ws.receive_json())["ok"] is True
    assert len(sink.events) == 2


# -- fuzzing the endpoints -----------------------------------------------------------------

http_bodies = st.one_of(
    st.binary(max_size=200),
    st.recursive(
        st.none()
        | st.booleans()
        | st.integers()
        | st.floats(allow_nan=False)
        | st.text(max_size=10),
        lambda inner: (
            st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
        ),
        max_leaves=10,
    ).map(lambda v: json.dumps(v).encode()),
    st.fixed_dictionaries(
        {}, optional={k: st.none() | st.integers() | st.text(max_size=30) for k in GOOD}
    ).map(lambda v: json.dumps(v).encode()),
)


@pytest.fixture(scope="module")
def fuzz_url() -> Iterator[str]:
    with serve(RecordingSink(), IngestOptions(clock=lambda: NOW)) as url:
        yield url


@settings(
    max_examples=300 * max(1, int(os.environ.get("NUDGEFLOW_FUZZ_SCALE", "1"))),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    body=http_bodies, path=st.sampled_from(["/events", "/v1/batch", "/v1/track", "/v1/identify"])
)
def test_fuzz_endpoints_never_5xx_and_always_explain(fuzz_url: str, body: bytes, path: str) -> None:
    resp = requests.post(fuzz_url + path, data=body, headers={"Content-Type": "application/json"})
    assert resp.status_code in (202, 400, 413), resp.text
    if resp.status_code != 202:
        errors = resp.json()["errors"]
        assert errors and all(e["reason"] and e["message"] for e in errors)


MERGE = "identify_merge"


def test_a_signed_in_browser_asks_each_merge_once_not_with_every_call(server: Server) -> None:
    """analytics.js sends anonymousId with every call: one merge request per pair."""
    clock = [NOW]
    url, sink = server(clock=lambda: clock[0])

    def track(anon: str) -> int:
        call = {"userId": "kim", "anonymousId": anon, "event": "Product Viewed"}
        resp = requests.post(f"{url}/v1/track", json=call, headers=basic("any-key"))
        assert resp.status_code == 202
        accepted: int = resp.json()["accepted"]
        return accepted

    assert [track("anon-1"), track("anon-1"), track("anon-2")] == [2, 1, 2]
    clock[0] += 600_000  # after the ttl the pair is asked again (a request is idempotent)
    assert track("anon-1") == 2
    merges = [(e.user_id, e.properties["known_id"]) for e in sink.events if e.type == MERGE]
    assert merges == [("anon-1", "kim"), ("anon-2", "kim"), ("anon-1", "kim")]
    assert [e.type for e in sink.events].count("product_view") == 4
