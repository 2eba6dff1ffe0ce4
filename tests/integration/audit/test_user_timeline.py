"""GET /users/<id>, `nudgeflow explain` and GET /experiments against two live workers.

Both workers share the partitions (same prefix and app id, their own web ports
and data dirs). Users are chosen so that every partition has one, so some are
owned by each worker; each worker must answer for every user, from the owner.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import uuid

import pytest

from nudgeflow.agents.router import partition_for
from tests.integration.audit.conftest import eventually, get_json

pytestmark = pytest.mark.kafka

PARTITIONS = 4


def _users_covering_partitions() -> list[str]:
    by_partition: dict[int, str] = {}
    i = 0
    while len(by_partition) < PARTITIONS:
        user = f"user-{i}"
        by_partition.setdefault(partition_for(user.encode(), PARTITIONS), user)
        i += 1
    return [by_partition[p] for p in range(PARTITIONS)]


def _event(user: str, type_: str, ts: int, **props: object) -> dict:
    return {
        "event_id": uuid.uuid4().hex,
        "user_id": user,
        "type": type_,
        "ts": ts,
        "properties": props,
        "traits": {"name": user.title()},
    }


async def test_any_worker_answers_for_any_user_from_its_owner(
    start_worker, audit_config, receiver
) -> None:
    prefix, app_id = f"aud{uuid.uuid4().hex[:6]}", f"nf-aud-{uuid.uuid4().hex[:6]}"
    env = {"AUDIT_HOOK_URL": receiver.url}
    a = start_worker(audit_config, prefix=prefix, app_id=app_id, env=env, wait=False)
    b = start_worker(audit_config, prefix=prefix, app_id=app_id, env=env, wait=False)
    await asyncio.gather(asyncio.to_thread(a.wait_ready), asyncio.to_thread(b.wait_ready))

    users = _users_covering_partitions()
    now = int(time.time() * 1000)
    events = [_event(u, "ping", now) for u in users]
    events += [
        _event(u, "cart_add", now, product_id="p1", product_name="Shoe", price=60.0) for u in users
    ]
    status, body = await a.post_events(events)
    assert (status, body) == (202, {"accepted": len(events)})

    async def answered_everywhere() -> dict[str, dict]:
        views: dict[str, dict] = {}
        for user in users:
            answers = [await get_json(f"{w.url}/users/{user}") for w in (a, b)]
            assert [s for s, _ in answers] == [200, 200], answers
            (_, from_a), (_, from_b) = answers
            assert from_a["served_by"] == from_b["served_by"]  # both went to the owner
            ping = [d for d in from_a["decisions"] if d["rule"] == "ping"]
            assert [d["outcome"] for d in ping] == ["fired"]
            cart = [d["outcome"] for d in from_a["decisions"] if d["rule"] == "cart_reminder"]
            assert cart[:2] == ["fired", "armed"], cart  # newest first
            sent = [t["trigger_id"] for t in from_a["recent_triggers"]]
            delivered = {
                d["trigger_id"] for d in from_a["deliveries"] if d["outcome"] == "delivered"
            }
            # the control variant sends nothing; everything else reached the hook
            expected = {
                t["trigger_id"] for t in from_a["recent_triggers"] if t["variant"] != "control"
            }
            assert delivered == expected and len(sent) == 2, from_a
            views[user] = from_a
        return views

    views = await eventually(answered_everywhere, timeout=90)
    owners = {v["served_by"] for v in views.values()}
    assert owners == {a.url, b.url}, owners  # each worker owns some users
    for user, view in views.items():
        assert view["user_id"] == user
        assert view["partition"] == partition_for(user.encode(), PARTITIONS)
        assert view["profile"] == {"name": user.title()}
        assert view["cart"]["items"][0]["product_name"] == "Shoe"
        assert view["armed"] == []  # both rules have fired

    # A person at a terminal asks worker A about a user that worker B owns.
    remote = next(u for u, v in views.items() if v["served_by"] == b.url)
    out = subprocess.run(
        [sys.executable, "-m", "nudgeflow", "explain", remote, "--rule", "ping", "--url", a.url],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert f"User {remote}" in out and b.url in out
    assert "ping: fired (trigger trg_" in out
    assert "ping -> hook attempt 1: delivered 200" in out

    # Every worker has the global experiment picture (all partitions, all users).
    async def same_totals() -> list[dict]:
        bodies = [await get_json(f"{w.url}/experiments/cart_reminder") for w in (a, b)]
        results = []
        for status, body in bodies:
            assert status == 200
            assert sum(v["exposures"] for v in body["variants"]) == len(users), body
            results.append(
                {
                    v["variant"]: (v["exposures"], v["sent"], v["delivered"])
                    for v in body["variants"]
                }
            )
        assert results[0] == results[1]
        return results

    (totals, _) = await eventually(same_totals, timeout=60)
    assert sum(sent for _, sent, _ in totals.values()) == sum(
        1
        for v in views.values()
        for t in v["recent_triggers"]
        if t["rule"] == "cart_reminder" and t["variant"] != "control"
    )
