"""Isolation and durability of the deliver agents (real Kafka, worker subprocess)."""

from __future__ import annotations

import asyncio
import statistics
import time
from typing import Any

import msgspec
import pytest
from aiokafka import AIOKafkaProducer

from tests.fixtures.kafka import consume_all
from tests.fixtures.receivers import Receiver, ReceiverFactory, hang, respond
from tests.integration.delivery.conftest import (
    DeliverWorker,
    StartWorker,
    make_trigger,
    wait_until,
)

pytestmark = pytest.mark.kafka

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def local(url: str, **kw: Any) -> dict[str, Any]:
    return {"url": url, "secret": SECRET, "allow_private": True, **kw}


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def paced(
    worker: DeliverWorker, ids: range, dests: list[str], rate: float, sent: dict[str, float]
) -> None:
    """Produce one trigger at a time at `rate`/s, noting when each left."""
    producer = AIOKafkaProducer(bootstrap_servers=worker.spec["broker"], acks="all")
    await producer.start()
    try:
        for n in ids:
            t = make_trigger(n, dests)
            sent[t.trigger_id] = time.monotonic()
            await producer.send_and_wait(
                worker.topics.triggers, msgspec.json.encode(t), key=t.user_id.encode()
            )
            await asyncio.sleep(1 / rate)
    finally:
        await producer.stop()


def latencies(rx: Receiver, sent: dict[str, float], ids: range) -> list[float]:
    arrived = {r.webhook_id: r.at for r in rx.requests}
    return [arrived[f"trg-{n}"] - sent[f"trg-{n}"] for n in ids]


async def test_hanging_destination_does_not_delay_healthy_one(
    start_deliver_worker: StartWorker, receiver_factory: ReceiverFactory
) -> None:
    healthy = await receiver_factory()
    stuck = await receiver_factory(default=hang(60))
    worker = await start_deliver_worker(
        {"ok": local(healthy.url), "stuck": local(stuck.url, timeout=10.0)},
        {"retry_schedule": ["30s", "60s"], "breaker_min_calls": 5, "breaker_reset": "5s"},
    )
    sent: dict[str, float] = {}
    await worker.produce([make_trigger("warmup", ["ok"])])
    await wait_until(lambda: healthy.ids() == ["trg-warmup"], 90, "worker warm-up", worker)

    alone, mixed = range(0, 100), range(1000, 1100)
    await paced(worker, alone, ["ok"], 25, sent)
    await wait_until(lambda: len(healthy.requests) >= 101, 60, "healthy-only batch", worker)
    await paced(worker, mixed, ["ok", "stuck"], 25, sent)
    await wait_until(lambda: len(healthy.requests) >= 201, 60, "mixed batch", worker)

    a, m = latencies(healthy, sent, alone), latencies(healthy, sent, mixed)
    print(
        f"\n[agent] healthy alone:          p50={statistics.median(a) * 1000:.1f}ms "
        f"p99={pct(a, 0.99) * 1000:.1f}ms"
    )
    print(
        f"[agent] healthy + hanging dest: p50={statistics.median(m) * 1000:.1f}ms "
        f"p99={pct(m, 0.99) * 1000:.1f}ms  (hanging timeout 10s, "
        f"{len(stuck.requests)} calls reached it)"
    )
    assert sorted(healthy.ids()) == sorted({*healthy.ids()})  # each delivered once
    assert pct(m, 0.99) < 5.0  # generous: a blocked pipeline would show >= the 10s timeout


async def test_kill_9_with_retries_pending_loses_nothing(
    start_deliver_worker: StartWorker, receiver_factory: ReceiverFactory
) -> None:
    rx = await receiver_factory(default=respond(503))
    worker = await start_deliver_worker(
        {"d": local(rx.url)},
        {
            "retry_schedule": ["1s", "2s", "3s", "3s", "3s", "3s", "3s", "3s", "3s", "3s"],
            "breaker_min_calls": 1000,  # retries, not parked deliveries (test_breaker.py)
        },
    )
    wanted = {f"trg-{n}" for n in range(100)}
    await worker.produce([make_trigger(n, ["d"]) for n in range(100)])
    t = worker.topics

    async def waiting_for_retry() -> set[str]:
        """Trigger ids with a retry record in tier 0 (every first retry, ~1s, lands there)."""
        recs = await consume_all(worker.spec["broker"], t.triggers_retry(0), timeout=10)
        return {msgspec.json.decode(r.value or b"")["trigger_id"] for r in recs}

    deadline = time.monotonic() + 90
    while (pending := await waiting_for_retry()) != wanted:
        assert time.monotonic() < deadline, f"only {len(pending)} in retry topics\n{worker.tail()}"
        await asyncio.sleep(0.5)
    assert rx.ids(200) == []

    worker.kill()  # kill -9 with all 100 waiting for a retry
    rx.default = respond(200)
    restarted = await start_deliver_worker({}, spec=worker.spec)
    await wait_until(lambda: set(rx.ids(200)) >= wanted, 120, "all 100 after restart", restarted)
    await asyncio.sleep(2)  # anything left in flight would now show up as a second 200
    delivered = rx.ids(200)
    assert sorted(delivered) == sorted(wanted)  # each exactly once
    dlq = await consume_all(worker.spec["broker"], t.triggers_dlq, timeout=3)
    assert dlq == []
