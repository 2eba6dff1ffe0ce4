"""Poison records (issue 21.2, 21.5): quarantined after N attempts, never ping-ponged.

A record whose handling raises or runs for tens of seconds used to either go to the
DLQ at once (raise) or block the worker's event loop until its consumer session
expired, after which the other worker took the partition and ran it again, and again.
Here the poison comes from the `test_hook` setting (agents/hooks.py): every event of
one type makes the real worker's engine call raise, or burn CPU in Python for 25 s as
a runaway template does. Each test sends bystander events after the poison and checks
that their triggers reach a real receiver on time, once.
"""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import pytest
import yaml

from tests.faults.conftest import (
    Tally,
    Workload,
    expected_triggers,
    fault_config,
    first_arrivals,
    group_assignment,
    kill,
    names,
    now_ms,
    partition_of,
    produce_events,
    ready,
    report,
    wait_delivered,
)
from tests.fixtures.kafka import Consumed, Record, consume_all, produce
from tests.fixtures.metrics import scrape
from tests.fixtures.receivers import Receiver, ReceiverFactory
from tests.fixtures.workers import WorkerProcess

pytestmark = [pytest.mark.load, pytest.mark.kafka, pytest.mark.timeout(300)]

ATTEMPTS = 3  # the default `max_attempts`
BUDGET_S = 2.0  # the default `handling_budget_s`
ATTEMPT_LINE = re.compile(rb"attempt (\d+) of (\d+) counted")
REBALANCES = "nudgeflow_faust_rebalances_total"


def config_with_cart(path: Path, rx: Receiver) -> Path:
    """The fault rules plus two armed by `cart_add` (its state holds the cart's value) and
    by `boom` (the test hook fails its handling after the engine armed it)."""
    fault_config(path, {"hook": rx.url})
    doc = yaml.safe_load(path.read_text())
    doc["rules"] += [
        {"name": name, "trigger": kind, "inactivity": "1h", "template": "hello.j2"}
        for name, kind in (("cart", "cart_add"), ("boomed", "boom"))
    ]
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def poison(user: str, kind: str, **properties: Any) -> dict[str, Any]:
    event = {"event_id": f"{kind}-{user}", "user_id": user, "type": kind, "ts": now_ms()}
    return {**event, "properties": properties}


async def dead_letters(worker: WorkerProcess, count: int, timeout: float) -> list[Consumed]:
    return await consume_all(
        worker.broker, f"{worker.prefix}.events.dlq", min_count=count, timeout=timeout
    )


Expected = dict[str, tuple[str, str, int]]


def lateness(rx: Receiver, expected: Expected, sent: dict[str, float]) -> dict[str, float]:
    """user -> seconds from producing the user's event to its first 2xx webhook."""
    first = first_arrivals(rx)
    arrived = [(user, first[t]) for t, (_, user, _) in expected.items() if t in first]
    return {user: round(at - sent[user], 2) for user, at in arrived}


def dlq_rows(records: list[Consumed]) -> list[tuple[Any, ...]]:
    headers = ("nudgeflow-reason", "nudgeflow-attempts")
    return [(r.key, *(r.headers.get(h) for h in headers)) for r in records]


def attempts_logged(worker: WorkerProcess, since: int = 0) -> list[int]:
    """The attempt numbers the worker logged (`attempt K of N`), from byte `since` on."""
    assert worker.log_path is not None
    return [int(m.group(1)) for m in ATTEMPT_LINE.finditer(worker.log_path.read_bytes()[since:])]


async def bystanders(
    worker: WorkerProcess, load: Workload, users: range, every_s: float
) -> dict[str, float]:
    """One `ping` per user, `every_s` apart; user -> when (monotonic) it was produced."""
    sent: dict[str, float] = {}
    for n in users:
        batch = load.wave([n], lambda _: ("ping",))
        sent[load.user(n)] = time.monotonic()
        await produce_events(worker.broker, f"{worker.prefix}.events", batch)
        await asyncio.sleep(every_s)
    return sent


async def test_raising_and_unencodable_records_are_quarantined_whole(
    start_worker, receiver_factory: ReceiverFactory, tmp_path: Path
) -> None:
    """A record whose handling raises every time (after the engine armed a rule): N
    attempts, then the DLQ, no `armed` decision, and the next user's event fires at once.
    A cart too big to store (1e308 items: an integer over 2**64): no `armed` decision
    for a state that never existed (21.5), whether it came raw or re-keyed (both are
    refused at parse time since issue 21.5's ingestion half; before it, the processing
    half had to hold)."""
    rx = await receiver_factory()
    config = config_with_cart(tmp_path / "nudgeflow.yaml", rx)
    worker = start_worker(config, env={"NUDGEFLOW_TEST_HOOK": "raise:boom"}, **names("raise"))
    load = Workload()
    raw_big, keyed_big = load.user(900), load.user(901)
    big = {"product_id": "sku-1", "price": 120, "quantity": 1e308}
    raw = [poison(load.user(999), "boom"), poison(raw_big, "cart_add", **big)]
    await produce_events(worker.broker, f"{worker.prefix}.events", raw)
    keyed = msgspec.json.encode(poison(keyed_big, "cart_add", **big))
    record = Record(keyed, keyed_big.encode(), partition=partition_of(keyed_big))
    await produce(worker.broker, f"{worker.prefix}.events.by-user", [record])
    sent = await bystanders(worker, load, range(3), every_s=0.0)
    expected = expected_triggers(config, load.events, tmp_path / "backtest")
    done = await wait_delivered(rx, expected, [worker], stall_s=30)
    dlq = await dead_letters(worker, 3, timeout=30)
    decisions = await consume_all(worker.broker, f"{worker.prefix}.decisions", timeout=10)
    failed = (raw_big.encode(), keyed_big.encode(), load.user(999).encode())
    traced = [d for d in decisions if d.key in failed]
    boom = [r for r in dlq if r.key == load.user(999).encode()]
    late = lateness(rx, expected, sent)
    report(
        "poison-raise",
        {
            "dlq": dlq_rows(dlq),
            "attempts_logged": attempts_logged(worker),
            "bystander_late_s": late,
            "decisions_for_failed_events": [msgspec.json.decode(d.value or b"") for d in traced],
        },
    )
    assert done is not None and Tally.of(rx, expected).duplicates == 0
    assert max(late.values()) < 5.0, late
    assert len(boom) == 1, dlq
    assert boom[0].headers["nudgeflow-reason"] == b"processing_error"
    assert boom[0].headers["nudgeflow-attempts"] == str(ATTEMPTS).encode()
    assert b"HookError" in boom[0].headers["nudgeflow-error"]
    assert attempts_logged(worker).count(1) >= 1 and max(attempts_logged(worker)) == ATTEMPTS
    assert {r.key for r in dlq} >= {raw_big.encode(), keyed_big.encode()}, dlq
    assert traced == [], "an audit record for a state that was never written"


async def test_kill_9_while_handling_keeps_the_attempt_count(
    start_worker, receiver_factory: ReceiverFactory, tmp_path: Path
) -> None:
    """Killed during attempt 1 of a 30 s record: the restarted worker goes on from the
    durable count (attempts 2 and 3), not from zero, and quarantines the record."""
    rx = await receiver_factory()
    config = fault_config(tmp_path / "nudgeflow.yaml", {"hook": rx.url})
    hook = {"NUDGEFLOW_TEST_HOOK": "spin:stall:30"}
    first_budget = {**hook, "NUDGEFLOW_HANDLING_BUDGET_S": "20"}
    worker = start_worker(config, env=first_budget, **names("poison-kill"))
    load = Workload()
    victim = load.user(999)
    await produce_events(worker.broker, f"{worker.prefix}.events", [poison(victim, "stall")])
    deadline = time.monotonic() + 20
    while attempts_logged(worker) != [1]:  # attempt 1 is counted durably once it runs long
        assert time.monotonic() < deadline, f"no attempt counted:\n{worker.tail()}"
        await asyncio.sleep(0.2)
    await kill(worker)
    restarted_at = log_size(worker)
    worker.env = {**hook, "NUDGEFLOW_HANDLING_BUDGET_S": "1"}
    worker.start()
    await ready(worker)
    dlq = await dead_letters(worker, 1, timeout=60)
    sent = await bystanders(worker, load, range(2), every_s=0.0)
    expected = expected_triggers(config, load.events, tmp_path / "backtest")
    done = await wait_delivered(rx, expected, [worker], stall_s=30)
    after = attempts_logged(worker, restarted_at)
    late = lateness(rx, expected, sent)
    figures = {"dlq": dlq_rows(dlq), "attempts_after_restart": after, "bystander_late_s": late}
    report("poison-kill", figures)
    assert [r.key for r in dlq] == [victim.encode()], dlq
    assert dlq[0].headers["nudgeflow-reason"] == b"processing_timeout"
    assert dlq[0].headers["nudgeflow-attempts"] == str(ATTEMPTS).encode()
    assert after == [2, 3], f"the count restarted: {after}"
    assert done is not None


class HealthProbe:
    """GET /health on each worker every 100 ms; the slowest answer per worker (a timeout
    counts as its 5 s)."""

    def __init__(self, workers: list[WorkerProcess]) -> None:
        self.workers = workers
        self.slowest = {w.web_port: 0.0 for w in workers}
        self.samples = 0
        self._task: asyncio.Task[None] | None = None

    async def _probe(self, session: aiohttp.ClientSession, worker: WorkerProcess) -> None:
        began = time.monotonic()
        try:
            async with session.get(worker.url + "/health") as resp:
                await resp.read()
        except (aiohttp.ClientError, TimeoutError):
            pass
        took = time.monotonic() - began
        self.slowest[worker.web_port] = max(self.slowest[worker.web_port], took)

    async def _run(self) -> None:
        timeout = aiohttp.ClientTimeout(total=5.0)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while True:
                await asyncio.gather(*(self._probe(session, w) for w in self.workers))
                self.samples += 1
                await asyncio.sleep(0.1)

    def __enter__(self) -> HealthProbe:
        self._task = asyncio.ensure_future(self._run())
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()


async def both_hold_partitions(a: WorkerProcess, b: WorkerProcess) -> None:
    topic, deadline = f"{a.prefix}.ticks", time.monotonic() + 120
    while True:
        owners = await group_assignment(a.broker, a.app_id, topic)
        if len([parts for parts in owners.values() if parts]) == 2:
            return
        assert time.monotonic() < deadline, f"the group never split: {owners}"
        await asyncio.sleep(0.5)


def log_size(worker: WorkerProcess) -> int:
    assert worker.log_path is not None
    return worker.log_path.stat().st_size


def heartbeat_failures(worker: WorkerProcess, since: int) -> int:
    """aiokafka's `Heartbeat failed ...` / `Heartbeat session expired` lines after `since`."""
    assert worker.log_path is not None
    return worker.log_path.read_bytes()[since:].count(b"Heartbeat")


async def rebalances(workers: list[WorkerProcess]) -> float:
    return sum([(await scrape(w.url)).get(REBALANCES, 0.0) for w in workers])


async def test_two_workers_one_event_that_runs_25s(
    start_worker, receiver_factory: ReceiverFactory, tmp_path: Path
) -> None:
    """Issue 21.1's stall: with two workers, one event whose handling runs 25 s made
    /health take 51 s, expired sessions 7 times and delivered webhooks 3-4 times. Now:
    /health < 100 ms, no rebalance, no duplicate, the bystanders on time, and the
    record in the DLQ after N overruns."""
    rx = await receiver_factory()
    config = fault_config(tmp_path / "nudgeflow.yaml", {"hook": rx.url})
    both = names("stall")
    env = {"NUDGEFLOW_TEST_HOOK": "spin:stall:25"}
    workers = [start_worker(config, wait=False, env=env, **both) for _ in range(2)]
    await asyncio.gather(*(ready(w) for w in workers))
    await both_hold_partitions(*workers)
    before = await rebalances(workers)
    logged = [log_size(w) for w in workers]
    load = Workload()
    victim = load.user(999)
    topic = f"{workers[0].prefix}.events"
    with HealthProbe(workers) as health:
        produced_ms = now_ms()
        await produce_events(workers[0].broker, topic, [poison(victim, "stall")])
        sent = await bystanders(workers[0], load, range(16), every_s=0.5)
        dlq = await dead_letters(workers[0], 1, timeout=90)
        expected = expected_triggers(config, load.events, tmp_path / "backtest")
        done = await wait_delivered(rx, expected, workers, stall_s=60)
    await asyncio.sleep(2.0)  # a late duplicate would show up now
    tally = Tally.of(rx, expected)
    late = lateness(rx, expected, sent)
    expiries = sum(heartbeat_failures(w, since) for w, since in zip(workers, logged, strict=True))
    figures = {
        "health_slowest_s": {p: round(s, 3) for p, s in health.slowest.items()},
        "health_samples": health.samples,
        "rebalances": await rebalances(workers) - before,
        "heartbeat_log_lines": expiries,
        **tally.__dict__,
        "bystander_late_s": late,
        "victim_partition": partition_of(victim),
        "quarantined_after_s": [round((r.timestamp - produced_ms) / 1000, 1) for r in dlq],
        "dlq": dlq_rows(dlq),
    }
    report("poison-stall", figures)
    assert max(health.slowest.values()) < 0.1, figures
    assert figures["rebalances"] == 0 and expiries == 0, figures
    assert done is not None and tally.lost == 0 and tally.duplicates == 0, figures
    assert max(late.values()) < ATTEMPTS * BUDGET_S + 4.0, figures
    assert [r.key for r in dlq] == [victim.encode()], figures
    assert dlq[0].headers["nudgeflow-attempts"] == str(ATTEMPTS).encode()
