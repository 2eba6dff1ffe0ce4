"""GET /users/<id>: the view, the owner lookup, and forwarding between two web servers.

The two servers are real aiohttp servers; the runtimes behind them are stand-ins
(a dict for each table and a fixed assignor map), so the routing logic is tested
without Kafka. The live two-worker test is tests/integration/audit/.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from nudgeflow.agents.router import partition_for
from nudgeflow.engine.actions import Decision
from nudgeflow.engine.state import CONVERTED, Armed, CartItem, Fire, UserState
from nudgeflow.tables import timeline
from nudgeflow.tables.timeline import Timeline, with_decisions
from nudgeflow.web.users import add_user_routes, owner_url, user_view
from tests.fixtures.workers import free_port

T0 = 1_714_564_800_000  # 2024-05-01T12:00:00Z
CHANGELOG = "nf-users-changelog"
PARTITIONS = 4


def _state() -> UserState:
    return UserState(
        user_id="ana",
        profile={"name": "Ana", "timezone": "Europe/Paris"},
        cart={"p1": CartItem("Shoe", 60.0, 1)},
        armed={
            "cart": Armed(
                deadline=T0 + 1_800_000,
                armed_at=T0,
                arm_id="e1",
                arm_type="cart_add",
                arm_props={},
                variant="a",
                last_activity=T0,
            )
        },
        last_fire={"welcome": T0 - 60_000},
        fires=[Fire("trg_w", "welcome", "default", T0 - 60_000, CONVERTED)],
    )


def _decision(outcome: str) -> Decision:
    return Decision(user_id="ana", rule="cart", outcome=outcome, at="2024-05-01T12:00:00.000Z")  # type: ignore[arg-type]


def test_owner_url_reads_the_assignor_map() -> None:
    metadata = {
        "http://a:1": {CHANGELOG: [0, 2], "other-changelog": [1]},
        "http://b:2": {CHANGELOG: [1, 3]},
    }
    assert owner_url(metadata, CHANGELOG, 2) == "http://a:1"
    assert owner_url(metadata, CHANGELOG, 1) == "http://b:2"
    assert owner_url({}, CHANGELOG, 1) is None


def test_user_view_shows_state_and_timeline_newest_first_without_trigger_bodies() -> None:
    tl = with_decisions(Timeline(), [_decision("armed"), _decision("fired")])
    view = user_view("ana", _state(), tl, now_ms=T0 + 1_000)
    assert view["profile"] == {"name": "Ana", "timezone": "Europe/Paris"}
    assert view["cart"]["value"] == 60.0
    assert view["armed"] == [
        {
            "rule": "cart",
            "step": 0,
            "variant": "a",
            "deadline": "2024-05-01T12:30:00.000Z",
            "due_in_s": 1799.0,
            "armed_at": "2024-05-01T12:00:00.000Z",
            "armed_by": "cart_add",
            "last_activity": "2024-05-01T12:00:00.000Z",
            "deferred": False,
        }
    ]
    assert view["last_fired"] == {"welcome": "2024-05-01T11:59:00.000Z"}
    assert view["recent_triggers"][0]["converted"] is True
    assert [d["outcome"] for d in view["decisions"]] == ["fired", "armed"]


def _runtime(url: str, metadata: dict[str, Any], users: dict, tl: dict) -> Any:
    table = SimpleNamespace(
        name="users",
        changelog_topic=SimpleNamespace(get_topic_name=lambda: CHANGELOG),
        get=users.get,
    )
    router = SimpleNamespace(table_metadata=lambda name: metadata)
    app = SimpleNamespace(router=router, conf=SimpleNamespace(canonical_url=url))
    return SimpleNamespace(app=app, users=table, timeline=tl, partitions=PARTITIONS)


class Pair:
    """Two web servers; `b` owns every partition."""

    def __init__(self) -> None:
        self.metadata: dict[str, Any] = {}
        self.users_b: dict[bytes, bytes] = {}
        self.timeline_b: dict[bytes, bytes] = {}
        self.servers: list[TestServer] = []

    async def start(self, token: str | None) -> tuple[str, str]:
        urls = []
        for owner in (False, True):
            port = free_port()
            url = f"http://127.0.0.1:{port}"
            app = web.Application()
            users = self.users_b if owner else {}
            tl = self.timeline_b if owner else {}
            add_user_routes(app, _runtime(url, self.metadata, users, tl), token)
            server = TestServer(app, host="127.0.0.1", port=port)
            await server.start_server()
            self.servers.append(server)
            urls.append(url)
        self.metadata[urls[1]] = {CHANGELOG: list(range(PARTITIONS))}
        return urls[0], urls[1]

    async def close(self) -> None:
        for s in self.servers:
            await s.close()


@pytest.fixture
async def pair() -> AsyncIterator[Pair]:
    p = Pair()
    yield p
    await p.close()


async def _get(url: str, token: str | None = None) -> tuple[int, dict]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with aiohttp.ClientSession() as s, s.get(url, headers=headers) as resp:
        return resp.status, await resp.json()


def _store(pair: Pair) -> None:
    from nudgeflow.engine.state import encode_state

    pair.users_b[b"ana"] = encode_state(_state())
    pair.timeline_b[b"ana"] = timeline.encode(with_decisions(Timeline(), [_decision("armed")]))


async def test_a_worker_that_does_not_own_the_user_forwards_to_the_owner(pair: Pair) -> None:
    a, b = await pair.start(token=None)
    _store(pair)
    status, body = await _get(f"{a}/users/ana")
    assert status == 200
    assert body["served_by"] == b
    assert body["partition"] == partition_for(b"ana", PARTITIONS)
    assert body["cart"]["items"][0]["product_name"] == "Shoe"
    assert [d["outcome"] for d in body["decisions"]] == ["armed"]


async def test_the_token_is_required_and_passed_along(pair: Pair) -> None:
    a, _ = await pair.start(token="s3cret")
    _store(pair)
    assert (await _get(f"{a}/users/ana"))[0] == 401
    status, body = await _get(f"{a}/users/ana", token="s3cret")
    assert status == 200 and body["user_id"] == "ana"


async def test_unknown_user_is_404_from_the_owner(pair: Pair) -> None:
    a, _ = await pair.start(token=None)
    status, body = await _get(f"{a}/users/nobody")
    assert (status, body["code"]) == (404, "unknown_user")


async def test_unassigned_partition_is_503(pair: Pair) -> None:
    a, _ = await pair.start(token=None)
    pair.metadata.clear()
    status, body = await _get(f"{a}/users/ana")
    assert (status, body["code"]) == (503, "unavailable")


async def test_unreachable_owner_is_502(pair: Pair) -> None:
    a, _ = await pair.start(token=None)
    pair.metadata.clear()
    pair.metadata["http://127.0.0.1:9"] = {CHANGELOG: list(range(PARTITIONS))}
    status, body = await _get(f"{a}/users/ana")
    assert (status, body["code"]) == (502, "owner_unreachable")


ODD_IDS = ["ana?x", "acme/ana", "pct%41", "a#b", "50% off", "café/ü", "..", ".", "a/../b"]


@pytest.mark.parametrize("user_id", ODD_IDS)
async def test_an_odd_id_is_forwarded_as_itself(pair: Pair, user_id: str) -> None:
    """The forward names exactly the decoded id, on the fixed route (issue 21 item 4)."""
    from nudgeflow.engine.state import encode_state
    from nudgeflow.web.paths import user_url

    a, b = await pair.start(token=None)
    pair.users_b[user_id.encode()] = encode_state(UserState(user_id=user_id, profile={"n": 1}))
    pair.users_b[b"ana"] = encode_state(_state())  # what `ana?x` used to reach
    async with aiohttp.ClientSession() as s, s.get(user_url(a, user_id)) as resp:
        assert resp.status == 200, await resp.text()
        body = await resp.json()
    assert (body["user_id"], body["profile"], body["served_by"]) == (user_id, {"n": 1}, b)


@pytest.mark.parametrize("raw", ["..%2Fmetrics", "%2E%2E%2Fopenapi.json", "x%3F%23y"])
async def test_an_encoded_traversal_or_query_stays_in_the_id(pair: Pair, raw: str) -> None:
    from yarl import URL

    a, _ = await pair.start(token=None)
    url = URL(a).with_path("/users/" + raw, encoded=True)
    async with aiohttp.ClientSession() as s, s.get(url) as resp:
        body = await resp.json()
    assert (resp.status, body["code"]) == (404, "unknown_user"), body
