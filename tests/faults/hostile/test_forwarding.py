"""GET /users/<id> and `nudgeflow explain` forward by the encoded id (issue 21 item 4).

Found: from a worker that does not own the user, the forwarded path was the decoded
one: `/users/ana%3Fx` answered with user `ana`, `acme%2Fana` gave 404, `pct%2541`
looked up `pctA`, and `/users/..%2Fmetrics` (`..%2Fexperiments`, `..%2Fopenapi.json`)
was answered by that route on the owner. Every id below is asked of the worker that
does NOT own it, so each answer went through the forwarding.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from urllib.parse import quote

import pytest

from tests.faults.hostile.conftest import Pair, eventually, get_raw

pytestmark = pytest.mark.kafka

# ids with / ? # % and non-ASCII characters, dots, and the look-alikes they decode to
ODD_IDS = [
    "ana",
    "ana?x",
    "acme/ana",
    "pct%41",
    "pctA",
    "a#b",
    "50% off",
    "café/ü?ß#1",
    "..",
    ".",
    "a/../b",
]
TRAVERSALS = ["..%2Fexperiments", "..%2Fmetrics", "..%2Fopenapi.json", "%2E%2E%2Fmetrics"]


@pytest.fixture(scope="module")
async def odd_users(pair: Pair) -> dict[str, str]:
    """Each odd id -> the name in its profile, stored on its owner (the pair's topics are
    this run's own, so the ids need no run tag)."""
    now = int(time.time() * 1000)
    users = {uid: f"name-{i}" for i, uid in enumerate(ODD_IDS)}
    events = [
        {"user_id": uid, "type": "ping", "ts": now, "traits": {"name": name}}
        for uid, name in users.items()
    ]
    status, body = await pair.a.post_events(events)
    assert status == 202, body

    async def all_stored() -> bool:
        for uid in users:
            status, _ = await get_raw(pair.owner(uid).url, "/users/" + quote(uid, safe=""))
            assert status == 200, uid
        return True

    await eventually(all_stored)
    return users


async def test_odd_ids_round_trip_through_the_forwarding_worker(
    pair: Pair, odd_users: dict[str, str]
) -> None:
    wrong: dict[str, object] = {}
    for uid, name in odd_users.items():
        raw = "/users/" + quote(uid, safe="").replace(".", "%2E")
        status, text = await get_raw(pair.other(uid).url, raw)
        body = json.loads(text) if text.startswith("{") else text
        ok = (
            status == 200
            and isinstance(body, dict)
            and body.get("user_id") == uid
            and body["profile"].get("name") == name
            and body.get("served_by") == pair.owner(uid).url
        )
        if not ok:
            wrong[uid] = (status, text[:160])
    print(f"\n[forwarding] {len(odd_users)} odd ids asked of the non-owner; wrong: {len(wrong)}")
    assert not wrong, wrong


@pytest.mark.parametrize("raw_id", TRAVERSALS)
async def test_an_encoded_traversal_is_a_user_id_not_a_route(pair: Pair, raw_id: str) -> None:
    decoded = raw_id.replace("%2F", "/").replace("%2E", ".")
    status, text = await get_raw(pair.other(decoded).url, "/users/" + raw_id)
    assert status == 404, (status, text[:300])
    body = json.loads(text)
    assert body["code"] == "unknown_user" and repr(decoded) in body["error"], body


async def test_explain_asks_the_owner_for_exactly_that_user(
    pair: Pair, odd_users: dict[str, str]
) -> None:
    for uid in ("acme/ana", "..", "café/ü?ß#1"):
        cmd = ["explain", uid, "--json", "--url", pair.other(uid).url]
        result = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "nudgeflow", *cmd],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, (uid, result.stderr[-2000:])
        view = json.loads(result.stdout)
        assert view["user_id"] == uid and view["served_by"] == pair.owner(uid).url
        assert view["profile"]["name"] == odd_users[uid]
