"""The breaker defers, never spends (issue 22.1): real Kafka, a real worker, real receivers
that verify every call with the reference `standardwebhooks` library.

* A flaky endpoint (500 to each webhook's first call): the burst of failures opens the
  circuit, yet every trigger is accepted once, after exactly one failed call.
* An endpoint down for OUTAGE_S (answering 503) then up: every trigger delivered soon
  after it returns, none dead-lettered, and the attempts on `<prefix>.deliveries` are
  exactly the calls the receiver got.

The reset delay and retry schedule are shortened; the full-length figures (a 2-minute
outage, the default settings) are in docs/reliability.md ("Delivery under a failing
endpoint").
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

import pytest

from tests.fixtures.kafka import consume_all
from tests.integration.delivery.conftest import (
    ByIdReceiver,
    StartWorker,
    attempts_by_trigger,
    make_trigger,
    wait_until,
)

pytestmark = pytest.mark.kafka

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
TRIGGERS = 30
OUTAGE_S = float(os.environ.get("NUDGEFLOW_OUTAGE_S", "10"))
BREAKER = {"breaker_window": "60s", "breaker_min_calls": 10, "breaker_failure_ratio": 0.7}
FLAKY = {**BREAKER, "retry_schedule": ["1s", "5s", "30s"], "breaker_reset": "1s"}
# NUDGEFLOW_FLAKY_DEFAULTS=1: the flaky endpoint against the default delivery settings
# (reset 5 s, first retry 5 s), to measure; the 60 s bound is for the settings above.
if os.environ.get("NUDGEFLOW_FLAKY_DEFAULTS") == "1":
    FLAKY = {"jitter": 0.2}  # (the default; an empty dict would mean FAST_DELIVERY)
FLAKY_LIMIT_S = 60.0


def local(url: str, **kw: Any) -> dict[str, Any]:
    return {"url": url, "secret": SECRET, "allow_private": True, **kw}


async def test_flaky_endpoint_gets_each_webhook_once_after_one_failed_call(
    start_deliver_worker: StartWorker, by_id_receiver: Any
) -> None:
    rx: ByIdReceiver = await by_id_receiver(SECRET, lambda _id, nth: 500 if nth == 1 else 200)
    worker = await start_deliver_worker({"flaky": local(rx.url)}, FLAKY)
    await worker.produce([make_trigger("warmup", ["flaky"])])
    await wait_until(lambda: rx.ids(200) == ["trg-warmup"], 90, "warm-up", worker)
    rx.calls.clear()
    rx.requests.clear()

    wanted = {f"trg-{n}" for n in range(TRIGGERS)}
    started = time.monotonic()
    await worker.produce([make_trigger(n, ["flaky"]) for n in range(TRIGGERS)])
    await wait_until(lambda: set(rx.ids(200)) >= wanted, 600, "all 30 accepted", worker)
    took = time.monotonic() - started
    print(f"\n[flaky] 30 triggers accepted in {took:.1f} s, {len(rx.requests)} calls")
    assert took <= FLAKY_LIMIT_S
    await asyncio.sleep(2.0)  # a stray extra call would show up now

    assert sorted(rx.ids(200)) == sorted(wanted)  # each accepted exactly once
    assert dict(rx.calls) == dict.fromkeys(wanted, 2)  # one failed call, one accepted
    assert "circuit flaky opened" in worker.tail(200_000)  # the breaker did trip
    attempts = await attempts_by_trigger(worker, min_count=2 * TRIGGERS + 1)
    assert {t: sorted(a) for t, a in attempts.items() if t in wanted} == {t: [1, 2] for t in wanted}
    assert await consume_all(worker.spec["broker"], worker.topics.triggers_dlq, timeout=3) == []


async def test_outage_then_recovery_delivers_all_soon_and_spends_only_real_calls(
    start_deliver_worker: StartWorker, by_id_receiver: Any
) -> None:
    state = {"down": False}
    rx: ByIdReceiver = await by_id_receiver(SECRET, lambda _id, _n: 503 if state["down"] else 200)
    worker = await start_deliver_worker(
        {"down": local(rx.url)},
        {**BREAKER, "retry_schedule": ["2s", "10s", "30s", "1m"], "breaker_reset": "2s"},
    )
    await worker.produce([make_trigger("warmup", ["down"])])
    await wait_until(lambda: rx.ids(200) == ["trg-warmup"], 90, "warm-up", worker)

    state["down"] = True
    went_down = time.monotonic()
    half = TRIGGERS // 2
    await worker.produce([make_trigger(n, ["down"]) for n in range(half)])
    await asyncio.sleep(OUTAGE_S / 2)
    await worker.produce([make_trigger(n, ["down"]) for n in range(half, TRIGGERS)])
    await asyncio.sleep(OUTAGE_S - (time.monotonic() - went_down))
    state["down"] = False
    came_up = time.monotonic()
    failed_calls = len(rx.requests) - 1

    wanted = {f"trg-{n}" for n in range(TRIGGERS)}
    await wait_until(lambda: set(rx.ids(200)) >= wanted, 60, "all after recovery", worker)
    await asyncio.sleep(2.0)
    first_ok = {r.webhook_id: r.at for r in rx.requests if r.status == 200}
    after_up = max(first_ok[t] for t in wanted) - came_up

    assert sorted(i for i in rx.ids(200) if i in wanted) == sorted(wanted)  # once each
    assert after_up <= 30.0, f"last delivery {after_up:.1f} s after the endpoint came back"
    assert await consume_all(worker.spec["broker"], worker.topics.triggers_dlq, timeout=3) == []
    attempts = await attempts_by_trigger(worker, min_count=len(rx.requests))
    for t in wanted:  # attempts recorded == calls received, numbered 1..n
        assert attempts[t] == list(range(1, rx.calls[t] + 1)), (t, attempts[t], rx.calls[t])
    # While down, calls were the burst before the circuit opened plus about one probe
    # per reset, not one per trigger per retry.
    assert failed_calls <= half + OUTAGE_S / 2 + 2, failed_calls
    print(
        f"\n[outage {OUTAGE_S:.0f} s] {failed_calls} failed calls while down; all {TRIGGERS} "
        f"delivered {after_up:.1f} s after recovery"
    )
