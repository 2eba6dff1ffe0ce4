"""Load and memory (issue 7 item 6): a steady stream over many users, through HTTP, to a
live worker that evaluates and delivers; no errors, consumer lag bounded, RSS flat.

The default suite runs 60 s over 10,000 users and asserts no errors and bounded lag.
NUDGEFLOW_SOAK=1 runs the 10-minute, 100,000-user version and also asserts that the
worker's RSS stays flat after warm-up (the figures quoted in docs/reliability.md). Its
warm-up first gives every one of the users state and reads it back (two events each,
produced to Kafka and applied before the clock starts), so "flat" is about a steady
population whose RocksDB memtables and block caches have filled to their bounds
(tables/options.py), not about the first visit of each user.
Rate: NUDGEFLOW_SOAK_RATE events/s (default 20). Measured on this shared 2-core machine
(load average 7-8 from other work): one worker evaluated 80-100 events/s from a preloaded
topic, and fell behind at 40 events/s of HTTP ingestion plus deliveries. Errors logged
while the worker starts (before the load) are not counted; see the report for those.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from prometheus_client.parser import text_string_to_metric_families

from tests.fixtures.kafka import consume_all, produce
from tests.fixtures.receivers import Receiver
from tests.fixtures.workers import ARTIFACTS, WorkerProcess

pytestmark = pytest.mark.kafka

FULL = os.environ.get("NUDGEFLOW_SOAK") == "1"
DURATION_S = 600.0 if FULL else 60.0
USERS = 100_000 if FULL else 10_000
RATE = float(os.environ.get("NUDGEFLOW_SOAK_RATE", "20"))
TICKS_PER_S = 10
SECRET = "whsec_c29hay10ZXN0LXNlY3JldC1ub3QtZm9yLXByb2Q="
# The lag may not exceed this many seconds of traffic at any sample.
LAG_BOUND_S = 30.0
# RSS after warm-up may grow by at most this fraction by the end (full run only).
# Compared peak to peak: RSS saw-tooths with each memtable flush (RSS follows RocksDB's
# memory down as well as up since pipeline/malloc.py), so two single samples would
# compare arbitrary phases. The peak of the window right after warm-up (30% to 65% of
# the run) against the peak of the last third: a trend shows, a bounded wave does not.
WARMUP_FRACTION = 0.3
LAST_FRACTION = 0.65
RSS_GROWTH_LIMIT = 0.15


def soak_config(path: Path, receiver_url: str) -> Path:
    doc: dict[str, Any] = {
        "destinations": {"hook": {"url": receiver_url, "secret": SECRET, "allow_private": True}},
        "templates": {"cart.j2": "Hi {{ user.name | default('there') }}, your cart misses you"},
        "rules": [
            {
                "name": "cart_reminder",
                "trigger": "cart_add",
                "inactivity": "20s",
                "activity": ["product_view", "cart_add"],
                "cancel_on": ["purchase"],
                "template": "cart.j2",
            },
            {"name": "big_spender", "trigger": "purchase", "when": "count('purchase', '1h') >= 2"},
        ],
    }
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


# product_view, cart_add and purchase in a 6:3:1 mix; users visited in a scrambled cycle
# so every one of USERS gets events and state (stride coprime with USERS).
_MIX = ("product_view",) * 6 + ("cart_add",) * 3 + ("purchase",)
_STRIDE = 7919


def event_for(k: int, run: str, now_ms: int) -> dict[str, Any]:
    user = (k * _STRIDE) % USERS
    kind = _MIX[(k // USERS + user) % len(_MIX)]
    props: dict[str, Any] = {"sku": f"sku-{k % 500}", "price": 10 + k % 90}
    return {
        "event_id": f"{run}-{k}",
        "user_id": f"{run}-u{user}",
        "type": kind,
        "ts": now_ms,
        "properties": props,
        "traits": {"name": f"User {user}"},
    }


@dataclass
class Sent:
    events: int = 0
    posts: int = 0
    errors: list[str] = field(default_factory=list)
    behind_s: float = 0.0  # how far the generator fell behind its schedule, at most


async def generate(url: str, run: str, duration_s: float, rate: float, first_k: int = 0) -> Sent:
    """POST `rate` events/s for `duration_s`, one batch per tick, on an absolute schedule."""
    sent = Sent()
    per_tick = max(1, round(rate / TICKS_PER_S))
    ticks = int(duration_s * TICKS_PER_S)
    limit = asyncio.Semaphore(8)
    start = time.monotonic()
    pending: set[asyncio.Task[None]] = set()

    async def post(session: aiohttp.ClientSession, first: int) -> None:
        now = time.time_ns() // 1_000_000
        batch = [event_for(k, run, now) for k in range(first, first + per_tick)]
        async with limit:
            try:
                async with session.post(url + "/events", json=batch) as resp:
                    body = await resp.text()
                    if resp.status != 202:
                        sent.errors.append(f"{resp.status}: {body[:200]}")
                        return
            except aiohttp.ClientError as exc:
                sent.errors.append(repr(exc))
                return
        sent.events += len(batch)
        sent.posts += 1

    async with aiohttp.ClientSession() as session:
        for tick in range(ticks):
            due = start + tick / TICKS_PER_S
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            else:
                sent.behind_s = max(sent.behind_s, -delay)
            task = asyncio.create_task(post(session, first_k + tick * per_tick))
            pending.add(task)
            task.add_done_callback(pending.discard)
        await asyncio.gather(*pending)
    return sent


async def group_lag(bootstrap: str, group: str, topic: str) -> int:
    """Messages of `topic` the worker's consumer group has not committed yet."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await admin.start()
    await consumer.start()
    try:
        committed = await admin.list_consumer_group_offsets(group)
        parts = consumer.partitions_for_topic(topic) or set()
        if not parts:
            await consumer._client.force_metadata_update()
            parts = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in parts]
        ends = await consumer.end_offsets(tps)
        return sum(
            end - max(0, committed[tp].offset if tp in committed else 0) for tp, end in ends.items()
        )
    finally:
        await consumer.stop()
        await admin.close()


PRELOAD_PASSES = 2  # the first creates each user's state, the second reads it back


async def preload(worker: WorkerProcess, run: str) -> float:
    """PRELOAD_PASSES events for each of USERS straight to Kafka; seconds until applied."""
    began = time.monotonic()
    now = time.time_ns() // 1_000_000
    records = []
    for k in range(-PRELOAD_PASSES * USERS, 0):  # ids before the measured run's
        # Views only: state for every user without a burst of cart timers after the warm-up.
        event = {**event_for(k, run, now), "type": "product_view"}
        records.append((event["user_id"].encode(), json.dumps(event).encode()))
    await produce(worker.broker, f"{worker.prefix}.events", records)
    while await group_lag(worker.broker, worker.app_id, f"{worker.prefix}.events") > 0:
        await asyncio.sleep(2.0)
    return time.monotonic() - began


def rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE)
    assert match is not None
    return int(match.group(1)) / 1024


@dataclass
class Samples:
    at: list[float] = field(default_factory=list)
    lag: list[int] = field(default_factory=list)
    rss: list[float] = field(default_factory=list)
    rocksdb: list[float] = field(default_factory=list)  # MB, every table's memtables + caches
    rocksdb_parts: list[dict[str, float]] = field(default_factory=list)  # "table/kind" -> MB


async def rocksdb_parts(url: str) -> dict[str, float]:
    """The worker's own account of RocksDB memory (nudgeflow_rocksdb_memory_bytes), in MB
    per "table/kind" (kind: memtables, block_cache, table_readers)."""
    async with aiohttp.ClientSession() as session:
        params = {"name[]": "nudgeflow_rocksdb_memory_bytes"}
        async with session.get(url + "/metrics", params=params) as resp:
            text = await resp.text()
    return {
        f"{s.labels['table']}/{s.labels['kind']}": round(s.value / 2**20, 1)
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def sample(worker: WorkerProcess, samples: Samples, every_s: float, stop: asyncio.Event):
    assert worker.proc is not None
    start = time.monotonic()
    while not stop.is_set():
        samples.at.append(round(time.monotonic() - start, 1))
        samples.lag.append(await group_lag(worker.broker, worker.app_id, f"{worker.prefix}.events"))
        samples.rss.append(round(rss_mb(worker.proc.pid), 1))
        parts = await rocksdb_parts(worker.url)
        samples.rocksdb_parts.append(parts)
        samples.rocksdb.append(round(sum(parts.values()), 1))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), every_s)


_ERROR = re.compile(r"\[(ERROR|CRITICAL)\]|level=(error|critical)|^Traceback")


def error_lines(log: str) -> list[str]:
    """Lines logged at error level or above (plain or key=value log format)."""
    return [line for line in log.splitlines() if _ERROR.search(line)]


@pytest.mark.timeout(DURATION_S + 420)
async def test_steady_load_keeps_lag_bounded_and_makes_no_errors(
    start_worker, receiver_factory, tmp_path: Path
) -> None:
    receiver: Receiver = await receiver_factory()
    config = soak_config(tmp_path / "soak.yaml", receiver.url)
    worker = await asyncio.to_thread(start_worker, config, wait=False)
    await asyncio.to_thread(worker.wait_ready, 120.0)
    run = worker.prefix
    preloaded_s = await preload(worker, run) if FULL else None

    assert worker.log_path is not None
    log_start = worker.log_path.stat().st_size
    samples = Samples()
    stop = asyncio.Event()
    sampler = asyncio.create_task(sample(worker, samples, 10.0 if FULL else 5.0, stop))
    sent = await generate(worker.url, run, DURATION_S, RATE, first_k=USERS if FULL else 0)
    # After the load: the worker catches up (lag back to zero) within a minute.
    drained_after = None
    t0 = time.monotonic()
    while time.monotonic() - t0 < 120:
        if await group_lag(worker.broker, worker.app_id, f"{worker.prefix}.events") == 0:
            drained_after = round(time.monotonic() - t0, 1)
            break
        await asyncio.sleep(1.0)
    stop.set()
    await sampler

    assert worker.proc is not None and worker.proc.poll() is None, worker.tail()
    dlq = await consume_all(worker.broker, f"{worker.prefix}.events.dlq", timeout=3)
    with worker.log_path.open("rb") as f:
        f.seek(log_start)
        log = f.read().decode(errors="replace")
    warm = max(1, int(len(samples.rss) * WARMUP_FRACTION))
    last = max(warm + 1, int(len(samples.rss) * LAST_FRACTION))
    peak_after_warmup, peak_at_end = max(samples.rss[warm:last]), max(samples.rss[last:])
    figures = {
        "duration_s": DURATION_S,
        "users": USERS,
        "preloaded_s": None if preloaded_s is None else round(preloaded_s, 1),
        "rate_target": RATE,
        "events_sent": sent.events,
        "rate_achieved": round(sent.events / DURATION_S, 1),
        "generator_behind_s": round(sent.behind_s, 2),
        "http_errors": len(sent.errors),
        "dlq": len(dlq),
        "log_errors": len(error_lines(log)),
        "webhooks_received": len(receiver.requests),
        "lag_max": max(samples.lag),
        "lag_bound": int(RATE * LAG_BOUND_S),
        "drained_after_s": drained_after,
        "rss_start_mb": samples.rss[0],
        "rss_after_warmup_mb": samples.rss[warm],
        "rss_end_mb": samples.rss[-1],
        "rss_max_mb": max(samples.rss),
        "rss_peak_after_warmup_mb": peak_after_warmup,
        "rss_peak_at_end_mb": peak_at_end,
        "rocksdb_start_mb": samples.rocksdb[0],
        "rocksdb_end_mb": samples.rocksdb[-1],
        "samples": list(zip(samples.at, samples.lag, samples.rss, samples.rocksdb, strict=True)),
        "rocksdb_parts": samples.rocksdb_parts,
    }
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / f"soak-{'full' if FULL else 'short'}.json").write_text(
        json.dumps(figures, indent=1)
    )
    print("\n[soak] " + " ".join(f"{k}={v}" for k, v in figures.items() if k != "samples"))

    assert sent.errors == [], sent.errors[:5]
    assert sent.events == int(DURATION_S * TICKS_PER_S) * max(1, round(RATE / TICKS_PER_S))
    assert dlq == []
    assert error_lines(log) == [], error_lines(log)[:10]
    assert max(samples.lag) <= RATE * LAG_BOUND_S, figures
    assert drained_after is not None, figures
    assert receiver.requests, "no webhook was delivered under load"
    assert all(r.status == 200 for r in receiver.requests)
    if FULL:
        growth = (peak_at_end - peak_after_warmup) / peak_after_warmup
        assert growth <= RSS_GROWTH_LIMIT, figures
