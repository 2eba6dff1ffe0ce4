"""Broker restart (issue 7.3): the Kafka broker is down for 30 s under load.

The worker is not restarted: it must reconnect by itself and lose nothing. HTTP
ingestion is the producer here, so the test also checks what callers are told
while the broker is gone: 503 with a clear reason and Retry-After, never a 202
for an event Kafka did not store. A caller retries a 503'd batch (event ids make
that safe), as a client should; at the end every event's triggers reached the
receiver, once.

The broker is this test's own (same data dir and port across the restart), so
the suite's shared broker is never touched.
"""

from __future__ import annotations

import asyncio
import collections
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from nudgeflow.kafka.broker import LocalKafka
from tests.faults.conftest import (
    SLOW,
    Tally,
    Workload,
    expected_triggers,
    fault_config,
    names,
    ready,
    report,
    wait_delivered,
)
from tests.fixtures.receivers import ReceiverFactory
from tests.fixtures.workers import WorkerProcess

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(1200 if SLOW else 600)]

OUTAGE_S = 30.0
POSTERS = 4  # concurrent HTTP callers
USERS_PER_POST = 5
LEAD_S = 8.0  # posting before the outage, and again after the broker is back


@pytest.fixture
def kafka_bootstrap(own_kafka: LocalKafka) -> str:
    """Workers of this module talk to the test's own broker."""
    return own_kafka.bootstrap


@dataclass(frozen=True)
class Post:
    at: float
    status: int | None  # None: no HTTP answer at all
    body: dict[str, Any]
    retry_after: str | None
    events: list[dict[str, Any]]


async def post(session: aiohttp.ClientSession, url: str, events: list[dict[str, Any]]) -> Post:
    try:
        async with session.post(url + "/events", json=events) as resp:
            body = await resp.json(content_type=None)
            return Post(
                time.monotonic(), resp.status, body, resp.headers.get("Retry-After"), events
            )
    except (aiohttp.ClientError, TimeoutError) as exc:
        return Post(time.monotonic(), None, {"client_error": repr(exc)}, None, events)


async def test_broker_down_30s_under_load(
    own_kafka: LocalKafka, start_worker, receiver_factory: ReceiverFactory, tmp_path: Path
) -> None:
    rx = await receiver_factory()
    config = fault_config(tmp_path / "nudgeflow.yaml", {"hook": rx.url})
    worker: WorkerProcess = start_worker(config, wait=False, **names("broker"))
    await ready(worker)
    pid = worker.proc.pid if worker.proc else None
    load = Workload()
    posts: list[Post] = []
    window: dict[str, float] = {}
    stop = asyncio.Event()
    counter = iter(range(10**9))

    async def poster(session: aiohttp.ClientSession) -> None:
        while not stop.is_set():
            first = next(counter) * USERS_PER_POST
            batch = load.wave(range(first, first + USERS_PER_POST), lambda n: ("arm", "ping"))
            posts.append(await post(session, worker.url, batch))
            await asyncio.sleep(0.5)

    async def outage() -> None:
        await asyncio.sleep(LEAD_S)
        await asyncio.to_thread(own_kafka.stop)
        window["down"] = time.monotonic()
        await asyncio.sleep(OUTAGE_S)
        window["restarting"] = time.monotonic()
        await asyncio.to_thread(own_kafka.start, 180.0)
        window["up"] = time.monotonic()
        await asyncio.sleep(LEAD_S)
        stop.set()

    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        await asyncio.gather(outage(), *(poster(session) for _ in range(POSTERS)))
        # A client retries what was refused, until it is stored.
        refused = [p for p in posts if p.status != 202]
        retried = 0
        for p in refused:
            for _ in range(30):
                again = await post(session, worker.url, p.events)
                retried += 1
                if again.status == 202:
                    break
                await asyncio.sleep(1.0)
            else:
                raise AssertionError(f"a batch was never accepted after the outage: {again}")

    statuses = collections.Counter(p.status for p in posts)
    expected = expected_triggers(config, load.events, tmp_path / "backtest")
    accepted = {e["user_id"] for p in posts if p.status == 202 for e in p.events}
    done = await wait_delivered(rx, expected, [worker])
    await asyncio.sleep(3.0)
    tally = Tally.of(rx, expected)
    first_ok_after = min(
        (p.at for p in posts if p.status == 202 and p.at > window["up"]), default=None
    )
    report(
        "broker-restart",
        {
            "outage_s": round(window["up"] - window["down"], 1),
            "broker_start_s": round(window["up"] - window["restarting"], 1),
            "posts": dict(statuses),
            "events": len(load.events),
            "events_202_first_time": sum(len(p.events) for p in posts if p.status == 202),
            "retried_posts": retried,
            **tally.__dict__,
            "broker_up_to_first_202_s": (
                round(first_ok_after - window["up"], 1) if first_ok_after else None
            ),
            "broker_up_to_all_delivered_s": round(done - window["up"], 1) if done else None,
        },
    )
    assert worker.proc is not None and worker.proc.poll() is None and worker.proc.pid == pid, (
        "the worker had to be restarted"
    )
    # While the broker was gone, callers were told so: 503 with the reason, never 202.
    assert set(statuses) <= {202, 503}, statuses
    # (a 202 answered in the first second may carry an ack from just before the stop)
    gone = [p for p in posts if window["down"] + 1.0 <= p.at < window["restarting"]]
    assert gone and all(p.status == 503 for p in gone), collections.Counter(p.status for p in gone)
    assert statuses[503] > 0, "no call was made while the broker was down"
    for p in posts:
        if p.status == 503:
            assert p.body["code"] == "store_unavailable", p.body
            assert "unavailable" in p.body["error"] and p.retry_after, p
        if p.status == 202:
            assert p.body["accepted"] == len(p.events)
    # Every accepted event was applied (its triggers arrived), and nothing twice.
    delivered_users = {expected[i][1] for i in set(rx.ids(200)) if i in expected}
    assert accepted <= delivered_users
    assert (tally.lost, tally.duplicates, tally.unexpected) == (0, 0, 0), tally.line()
