"""Erasure and tracked clicks against the real broker, a real worker and a real receiver
(issue 19 items 3 and 5). One worker serves the module (conftest.py)."""

from __future__ import annotations

import re
import subprocess
import sys
import uuid

import msgspec
import pytest

from nudgeflow.agents.router import partition_for
from nudgeflow.tables.timers import is_index_key, split_key
from tests.fixtures.kafka import consume_all
from tests.fixtures.metrics import wait_for_metric
from tests.fixtures.receivers import Receiver, respond
from tests.fixtures.workers import WorkerProcess
from tests.integration.audit.conftest import eventually
from tests.integration.privacy.conftest import call, event, now_ms, received, wait_for

pytestmark = pytest.mark.kafka
FORGOTTEN = 'nudgeflow_deliveries_total{destination="hook",outcome="forgotten"}'


def neighbour(user: str, partitions: int = 4) -> str:
    """Another user in `user`'s partition (its timers are fired in the same scan)."""
    want = partition_for(user.encode(), partitions)
    return next(
        u for i in range(1000) if partition_for((u := f"{user}-n{i}").encode(), partitions) == want
    )


async def test_a_click_through_r_is_attributed_to_its_variant_and_step(
    privacy_worker: WorkerProcess, hook: Receiver
) -> None:
    w, user = privacy_worker, f"clicker-{uuid.uuid4().hex[:6]}"
    assert (await w.post_events([event(user, "promo_seen", now_ms())]))[0] == 202
    [(_, sent)] = await wait_for(hook, user, 1)
    [link] = re.findall(r"http://\S+/r/\S+", sent["message"])
    assert link.startswith(w.url + "/r/")

    status, _, headers = await call("GET", link, allow_redirects=False)
    assert (status, headers["Location"]) == (302, "https://shop.example/cart?from=promo")
    tampered = link[:-2] + ("AA" if not link.endswith("AA") else "BB")
    status, body, headers = await call("GET", tampered, allow_redirects=False)
    assert status == 400 and "Location" not in headers and body["code"] == "bad_link"

    async def clicked() -> dict:
        _, view, _ = await call("GET", f"{w.url}/users/{user}")
        [fire] = view["recent_triggers"]
        assert fire["trigger_id"] == sent["trigger_id"] and fire["clicked"], fire
        return view

    await eventually(clicked, timeout=30, every=0.2)

    async def counted() -> dict:
        _, exp, _ = await call("GET", f"{w.url}/experiments/promo")
        by_variant = {v["variant"]: v["clicked"] for v in exp["variants"]}
        assert by_variant[sent["variant"]] == 1 and sum(by_variant.values()) == 1, by_variant
        return exp

    await eventually(counted, timeout=30, every=0.2)
    assert sent["step"] in (0, "0")  # the rule's one send step, as the click recorded it


async def test_erasure_removes_every_trace_and_drops_the_retry(
    privacy_worker: WorkerProcess, hook: Receiver, kafka_bootstrap: str
) -> None:
    w, user = privacy_worker, f"gone-{uuid.uuid4().hex[:6]}"
    witness = neighbour(user)
    hook.script.append(respond(500))  # the user's ping fails once: a retry in 5 s
    ping = event(user, "ping", now_ms())
    ping["traits"] = {"email": "gone@example.com"}
    assert (await w.post_events([ping]))[0] == 202
    [(status, _)] = await wait_for(hook, user, 1)
    assert status == 500
    t0 = now_ms()
    armed = [event(user, "cart_add", t0, price=70), event(witness, "cart_add", t0 + 1, price=5)]
    assert (await w.post_events(armed))[0] == 202

    async def everything_there() -> bool:
        _, view, _ = await call("GET", f"{w.url}/users/{user}")
        assert [a["rule"] for a in view["armed"]] == ["cart_reminder"], view
        assert [d["status"] for d in view["deliveries"]] == [500], view
        return True

    await eventually(everything_there, timeout=20, every=0.1)

    assert (await call("DELETE", f"{w.url}/users/{user}"))[0] == 204
    assert (await call("GET", f"{w.url}/users/{user}"))[0] == 404
    # A second erasure, by the CLI: a no-op, and no error.
    cli = [sys.executable, "-m", "nudgeflow", "forget", user, "--url", w.url]
    out = subprocess.run(cli, capture_output=True, text=True, timeout=60, check=True).stdout
    assert out.startswith("nothing to erase"), out

    # The witness's reminder (same partition, later deadline) fires: the user's timer was
    # due before it, and it did not fire. The retry came due and was dropped.
    await wait_for(hook, witness, 1)
    assert await wait_for_metric(w.url, FORGOTTEN, 1, timeout=30) >= 1
    assert [s for s, _ in received(hook, user)] == [500]  # nothing after the erasure

    await _changelogs_end_in_tombstones(kafka_bootstrap, w.app_id, user.encode())
    records = await consume_all(kafka_bootstrap, f"{w.prefix}.erasures", min_count=1)
    assert len(records) == 1
    audit = msgspec.json.decode(records[0].value or b"")
    assert audit["timers_removed"] == 1 and len(audit["user_hash"]) == 64
    value = records[0].value or b""
    assert user.encode() not in value and b"gone@" not in value


async def _changelogs_end_in_tombstones(bootstrap: str, app_id: str, user: bytes) -> None:
    """The last record of every key of the user, in both changelogs, is a tombstone."""
    for table in ("users", "timeline"):
        records = await consume_all(bootstrap, f"{app_id}-{table}-changelog", min_count=1)
        last: dict[bytes, bytes | None] = {}
        for r in records:
            key = r.key or b""
            if key == user or (is_index_key(key) and split_key(key)[1] == user):
                last[key] = r.value
        assert user in last, (table, "the user was never written")
        if table == "users":
            assert any(is_index_key(k) for k in last), "no timer entry was ever written"
        assert all(v is None for v in last.values()), (table, last)
