"""Live rules against the real broker with two workers of one app (DESIGN §3.3, issue 20).

The tests run in order on the module's two workers and one rules topic: a threshold
published while events flow, pause and resume, rollback, a version one worker cannot
load, bad input refused with nothing published, a kill -9 right after a publish, and
GET /rules answered from the follower's memory with a PUT read back at once.
"""

from __future__ import annotations

import asyncio
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

import aiohttp

from nudgeflow.config.versions import Conflict, history
from nudgeflow.kafka import ruleset
from tests.integration.rules.conftest import DOCUMENT, Cluster, cart_add

LOWER = DOCUMENT.replace("value | default(0)) > 100", "value | default(0)) > 50")


async def test_a_new_threshold_published_while_events_flow(cluster: Cluster) -> None:
    """60 carts of 80, one every 50 ms, over both workers; halfway, the threshold drops
    from 100 to 50. Each cart's decision is made at its deadline under the version live
    then, and says which: condition_false under 1, fired under 2; every fired decision
    has exactly one webhook, and none other arrived (nothing lost, nothing doubled)."""
    await cluster.wait_version(1)
    users = {f"flow-{i}" for i in range(60)}
    ordered = sorted(users, key=lambda u: int(u.split("-")[1]))
    for i, user in enumerate(ordered):
        if i == 20:
            await cluster.apply(LOWER, comment="threshold 50", expected=1)
        await cluster.send([cart_add(user, 80)], cluster.workers[i % 2])
        await asyncio.sleep(0.05)
    await cluster.wait_version(2)
    final = await cluster.decisions(users, 60)
    by_user = {d["user_id"]: d for d in final}
    assert len(final) == 60 and set(by_user) == users  # one final decision per cart
    for d in final:
        expected = "fired" if d["rule_version"] == 2 else "condition_false"
        assert (d["outcome"], d["rule_version"] in (1, 2)) == (expected, True), d
    fired = {d["trigger_id"] for d in final if d["outcome"] == "fired"}
    # sent over a second after the publish, due a second later: under version 2 on both
    assert all(by_user[u]["outcome"] == "fired" for u in ordered[40:])
    assert {d["partition"] for d in final if d["outcome"] == "fired"} == {0, 1, 2, 3}
    delivered = await _deliveries(cluster, users, len(fired))
    assert sorted(delivered) == sorted(fired)  # one webhook per fired decision, no other
    body = await cluster.rules(cluster.a)
    assert (body["version"], body["comment"], body["rules"]) == (
        2, "threshold 50", [{"name": "big_cart", "paused": False}]
    )  # fmt: skip


async def _deliveries(cluster: Cluster, users: set[str], count: int) -> list[str]:
    deadline = time.monotonic() + 30
    while len(got := cluster.deliveries(users)) < count and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    await asyncio.sleep(0.3)  # a duplicate would arrive right behind
    ids = [b["trigger_id"] for b in cluster.deliveries(users)]
    assert len(got) >= count
    return ids


async def _post(url: str, body: object | None = None, method: str = "POST") -> tuple[int, dict]:
    async with aiohttp.ClientSession() as s, s.request(method, url, json=body) as resp:
        return resp.status, await resp.json()


async def _toggle(cluster: Cluster, url: str, verb: str, version: int) -> list[dict]:
    """POST pause/resume on one worker; once both run `version`, six carts of 300."""
    status, body = await _post(f"{url}/rules/big_cart/{verb}")
    assert (status, body["version"], body["paused"]) == (200, version, verb == "pause")
    await cluster.wait_version(version)
    users = {f"{verb}-{i}" for i in range(6)}
    await cluster.send([cart_add(u, 300) for u in sorted(users)])
    return await cluster.decisions(users, 6)


async def test_pause_suppresses_due_sends_and_resume_lets_later_ones_go(cluster: Cluster) -> None:
    final = await _toggle(cluster, cluster.b.url, "pause", 3)
    assert {(d["outcome"], d.get("reason"), d["rule_version"]) for d in final} == {
        ("suppressed", "paused", 3)
    }
    final = await _toggle(cluster, cluster.a.url, "resume", 4)
    assert {(d["outcome"], d["rule_version"]) for d in final} == {("fired", 4)}
    resumed = {d["user_id"] for d in final}
    assert len(await _deliveries(cluster, resumed, 6)) == 6
    assert cluster.deliveries({f"pause-{i}" for i in range(6)}) == []  # never went out


async def test_rollback_restores_the_previous_behaviour(cluster: Cluster) -> None:
    applied = await ruleset.rollback(cluster.broker, cluster.prefix, 1, author="test")
    assert applied.record.version == 5 and "value | default(0)) > 100" in applied.record.document
    await cluster.wait_version(5)
    users = {"rb-80", "rb-150"}
    await cluster.send([cart_add("rb-80", 80), cart_add("rb-150", 150)])
    final = {d["user_id"]: d for d in await cluster.decisions(users, 2)}
    assert (final["rb-80"]["outcome"], final["rb-150"]["outcome"]) == ("condition_false", "fired")


async def test_a_version_one_worker_cannot_load_leaves_it_on_its_last_good(
    cluster: Cluster,
) -> None:
    """Version 6 needs LIVE_EXTRA, set on worker a only: b stays on 5 and says why."""
    needs_env = LOWER.replace('for {{ user.id }}"', 'for {{ user.id }} ${LIVE_EXTRA}"')
    assert await cluster.apply(needs_env, env={"LIVE_EXTRA": "x"}) == 6
    await cluster.wait_version(6, cluster.a)
    deadline = time.monotonic() + 20
    while (body := await cluster.rules(cluster.b))["error"] is None:
        assert time.monotonic() < deadline, body
        await asyncio.sleep(0.05)
    assert body["version"] == 5
    assert "version 6" in body["error"] and "LIVE_EXTRA" in body["error"]
    assert "templates.big" in body["error"]  # the field
    async with aiohttp.ClientSession() as s, s.get(f"{cluster.b.url}/ready") as resp:
        ready = await resp.json()
    assert ready["rules"]["version"] == 5 and "LIVE_EXTRA" in ready["rules"]["error"]
    async with aiohttp.ClientSession() as s, s.get(f"{cluster.b.url}/metrics") as resp:
        text = await resp.text()
    assert "nudgeflow_rules_version_errors_total 1.0" in text
    assert "nudgeflow_rules_live_version 5.0" in text
    assert cluster.b.proc is not None and cluster.b.proc.poll() is None  # still running
    assert await cluster.apply(LOWER) == 7  # the next good version loads everywhere
    await cluster.wait_version(7)
    assert (await cluster.rules(cluster.b))["error"] is None


async def test_bad_documents_are_refused_and_nothing_is_published(
    cluster: Cluster, tmp_path: Path
) -> None:
    url = f"{cluster.a.url}/rules"
    bad = DOCUMENT.replace("inactivity: 1s", "inactivity: 1x")
    status, body = await _post(url, {"document": bad}, "PUT")
    assert status == 422 and body["code"] == "invalid_document"
    assert {"rule": "big_cart", "field": "inactivity"}.items() <= body["errors"][0].items()
    sandbox = DOCUMENT.replace("big cart {{", "{{ ''.__class__.__mro__ }} {{")
    status, body = await _post(url, {"document": sandbox}, "PUT")
    assert status == 422, body  # refused at apply, not at send time
    problem = body["errors"][0]
    assert (problem["rule"], problem["field"]) == ("big_cart", "template")
    assert "unsafe" in problem["message"]
    huge = DOCUMENT + "#" + "x" * 10_000_000 + "\n"
    async with aiohttp.ClientSession() as s, s.put(url, json={"document": huge}) as resp:
        assert resp.status == 413
    path = tmp_path / "bad.yaml"
    path.write_text(bad)
    cli = [sys.executable, "-m", "nudgeflow", "rules", "apply", str(path)]
    cli += ["--broker", cluster.broker, "--topic-prefix", cluster.prefix]
    done = subprocess.run(cli, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "rules[big_cart].inactivity" in done.stderr, done.stderr
    won = await ruleset.read_versions(cluster.broker, ruleset.rules_topic(cluster.prefix))
    assert max(won) == 7  # nothing published by any of them


async def test_concurrent_applies_the_loser_is_told_to_rebase(cluster: Cluster) -> None:
    first, second = await asyncio.gather(
        cluster.apply(DOCUMENT, expected=7, comment="one"),
        cluster.apply(LOWER.replace("1s", "2s"), expected=7, comment="two"),
        return_exceptions=True,
    )
    results = [first, second]
    won = [r for r in results if isinstance(r, int)]
    lost = [r for r in results if isinstance(r, Conflict)]
    assert won == [8] and len(lost) == 1, results
    assert "rebase on version 8" in str(lost[0])
    await cluster.wait_version(8)


async def test_kill9_right_after_a_publish_restarts_on_the_newest_version(
    cluster: Cluster, tmp_path: Path
) -> None:
    assert await cluster.apply(DOCUMENT, comment="before the crash") == 9
    cluster.b.kill()
    edited = tmp_path / "live_rules.yaml"  # restarted with a file that is not the live one
    edited.write_text(LOWER)
    cluster.b.config = edited
    cluster.b.start()
    await asyncio.to_thread(cluster.b.wait_ready)
    body = await cluster.rules(cluster.b)
    assert body["version"] == 9 and body["comment"] == "before the crash"
    assert "live_rules.yaml differs from the live rules version 9" in cluster.b.tail(200_000)
    delays = sorted(cluster.swap_delays_s)
    print(
        f"\n[live rules] swap delay over {len(delays)} swaps: "
        f"p50 {statistics.median(delays) * 1000:.0f} ms, max {delays[-1] * 1000:.0f} ms"
    )


async def _topic_reads(url: str) -> float:
    """The worker's nudgeflow_rules_topic_reads_total: whole reads with a new consumer."""
    async with aiohttp.ClientSession() as s, s.get(f"{url}/metrics") as resp:
        text = await resp.text()
    found = re.search(r"^nudgeflow_rules_topic_reads_total (\S+)$", text, re.M)
    assert found is not None, text[-2000:]
    return float(found[1])


async def test_gets_read_no_topic_and_a_put_is_read_back_at_once(cluster: Cluster) -> None:
    """GET /rules and /rules/history answer from the follower's memory (no new consumer:
    the topic reads counter stays put across them) in the shape a topic read gives; after
    PUT /rules returns, the same worker's GETs show the new version, with no polling."""
    url = cluster.a.url
    await cluster.wait_version(9, cluster.a)
    reads = await _topic_reads(url)
    assert reads >= 1  # the start read the topic
    for _ in range(5):
        live = await cluster.rules(cluster.a)
        status, past = await _post(f"{url}/rules/history", method="GET")
    assert await _topic_reads(url) == reads
    assert (status, live["version"], live["comment"]) == (200, 9, "before the crash")
    won = await ruleset.read_versions(cluster.broker, ruleset.rules_topic(cluster.prefix))
    assert past == {"live": 9, "versions": history(won)}
    put = {"document": LOWER, "comment": "read back", "expected": 9}
    status, applied = await _post(f"{url}/rules", put, "PUT")
    assert (status, applied["version"]) == (201, 10), applied
    reads = await _topic_reads(url)  # the PUT's own reads (the publish and its read-back)
    live = await cluster.rules(cluster.a)
    assert (live["version"], live["comment"], live["sha256"]) == (
        10,
        "read back",
        applied["sha256"],
    )
    status, past = await _post(f"{url}/rules/history", method="GET")
    assert (past["live"], [v["version"] for v in past["versions"]][:2]) == (10, [10, 9])
    assert await _topic_reads(url) == reads
