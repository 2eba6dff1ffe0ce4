"""Scenario 3: timer scale.

Two figures per pending size, measured differently (docs/performance.md says which):

* `fire_1000_due_ms`: the index + engine cost of finding and firing 1,000 due timers
  with N pending, on a RocksDB (rocksdict) DB with the live key layout, through the
  same functions the evaluate agent uses (`tables.timers.due/add/remove`,
  `tables.users.load/save`, `Engine.fire_due`). No Kafka, no changelog: the pure
  cost of the index at size N.
* `lateness_p50_s` / `lateness_p99_s`: a live worker holding N pending timers while
  `fire` more fall due over 10 s; lateness = the trigger record's Kafka timestamp
  minus its deadline. Only for the sizes in `live`. The N pending timers are seeded
  into the users changelog (bench/seed.py) and restored by the worker at start, or,
  with `--load events`, armed by N events the worker applies (N / throughput seconds).
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rocksdict import Options, Rdict, WriteBatch

from nudgeflow.bench import configs, seed
from nudgeflow.bench.kafka_io import KeysSeen, produce_bulk, provision, read_topic
from nudgeflow.bench.results import Figure, Result, percentile, rounded
from nudgeflow.bench.session import BenchSession
from nudgeflow.bench.worker_proc import wait_for_metric
from nudgeflow.bench.workloads import arm_events
from nudgeflow.config.build import build_engine
from nudgeflow.config.loader import load_config
from nudgeflow.engine.core import Engine
from nudgeflow.engine.state import UserState
from nudgeflow.events.model import Event
from nudgeflow.tables import timers as timer_index
from nudgeflow.tables import users as user_table
from nudgeflow.tables.single import SinglePartitionTable

log = logging.getLogger(__name__)

DUE = 1000
FIRE_SPREAD_MS = 10_000
DELAY_MS = configs.TIMER_DELAY_S * 1000
# Events/s assumed for placing the first deadline after a seeded load (no rate measured):
# half what the worker applies on this machine, so every arming event is in before it.
SEEDED_RATE = 400.0


def _armed(engine: Engine, user: str, ts: int, now: int) -> UserState:
    event = Event(user_id=user, type="arm", ts=ts, event_id=f"a-{user}")
    return engine.apply(None, event, now).state


def _keys(prefix: str, count: int) -> Iterator[bytes]:
    return (f"{prefix}{n:07d}".encode() for n in range(count))


def fire_cost_ms(pending: int, directory: Path, due: int = DUE) -> float:
    """Milliseconds to find and fire `due` due timers with `pending` others in the index."""
    config = configs.write_config(directory, "timers", configs.timers_config())
    engine = build_engine(load_config(config), secret=b"bench")
    now = int(time.time() * 1000)
    path = directory / f"timers-{pending}.rdb"
    db = Rdict(str(path), Options(raw_mode=True))
    try:
        store = SinglePartitionTable(db)
        template = user_table.encode_state(_armed(engine, "p", now, now))
        future = now + DELAY_MS
        batch = WriteBatch(raw_mode=True)
        for n, key in enumerate(_keys("p", pending)):
            batch.put(timer_index.index_key(future + n % 60_000, key), b"1")
            batch.put(key, template)
        for key in _keys("d", due):
            state = _armed(engine, key.decode(), now - DELAY_MS - 1000, now)
            batch.put(timer_index.index_key(state.next_deadline() or 0, key), b"1")
            batch.put(key, user_table.encode_state(state))
        db.write(batch)
        db.flush()
        began = time.perf_counter()
        fired = _fire(engine, store, now)
        elapsed = (time.perf_counter() - began) * 1000
        if fired != due:
            raise RuntimeError(f"fired {fired} of {due} due timers")
        return elapsed
    finally:
        db.close()
        Rdict.destroy(str(path))
        shutil.rmtree(path, ignore_errors=True)


def _fire(engine: Engine, store: SinglePartitionTable, now: int) -> int:
    """The evaluate agent's fire path (agents/evaluate.py fire_timers + store)."""
    table: Any = store
    fired = 0
    for deadline, user_key in timer_index.due(table, 0, now, DUE):
        state = user_table.load(table, user_key)
        if state is None or state.next_deadline() != deadline:
            timer_index.remove(table, user_key, deadline)
            continue
        step = engine.fire_due(state, now)
        fired += bool(step.actions)
        after = step.state.next_deadline()
        if after != deadline:
            timer_index.add(table, user_key, after)
        user_table.save(table, user_key, step.state)
        if after != deadline:
            timer_index.remove(table, user_key, deadline)
    return fired


async def live_lateness(session: BenchSession, pending: int, fire: int) -> list[float]:
    """Seconds late of `fire` timers falling due over 10 s while `pending` wait."""
    prefix = session.prefix(f"timers{pending}")
    bootstrap = session.bootstrap
    await provision(bootstrap, prefix, session.partitions)
    config = configs.write_config(session.workdir, "timers", configs.timers_config())
    began = time.monotonic()
    now = int(time.time() * 1000)
    if session.load == "seed":  # the worker restores the pending timers at start
        engine = build_engine(load_config(config), secret=b"bench")
        arming = seed.first_events(pending, now, type_="arm", prefix="p")
        await seed.seed_users(bootstrap, prefix, engine, arming, now, session.partitions)
    worker = session.worker(config, prefix, roles=("evaluate",)).start()
    await asyncio.to_thread(worker.wait_ready, 600 + pending / 1000)
    if session.load == "seed":
        await asyncio.to_thread(wait_for_metric, worker, "nudgeflow_timers_pending", pending, 300)
        rate = SEEDED_RATE
    else:
        await produce_bulk(
            bootstrap, f"{prefix}.events", arm_events(range(pending), "arm", now, prefix="p")
        )
        timeout = 300 + pending / 20
        await asyncio.to_thread(
            wait_for_metric, worker, "nudgeflow_events_applied_total", pending, timeout
        )
        rate = pending / max(0.1, time.monotonic() - began)
    log.info("timers: %d pending loaded (%s) in %.1fs", pending, session.load,
             time.monotonic() - began)  # fmt: skip
    # Deadlines start once the arming events can all have been applied (2x margin).
    first = int(time.time() * 1000) + 5000 + int(2000 * fire / rate)
    deadlines = {
        key: first + (FIRE_SPREAD_MS * i) // fire for i, key in enumerate(_keys("f", fire))
    }
    events = arm_events(range(fire), "arm", first - DELAY_MS, spread_ms=FIRE_SPREAD_MS, prefix="f")
    reader = asyncio.create_task(
        read_topic(
            bootstrap,
            f"{prefix}.triggers",
            session.partitions,
            until=KeysSeen(deadlines, fire),
            timeout=(first / 1000 - time.time()) + FIRE_SPREAD_MS / 1000 + 180,
        )
    )
    await produce_bulk(bootstrap, f"{prefix}.events", events)
    triggers = await reader
    worker.stop()
    late: dict[bytes, float] = {}
    for r in triggers:
        if r.key in deadlines and r.key not in late:
            late[r.key] = max(0.0, (r.timestamp_ms - deadlines[r.key]) / 1000)
    return list(late.values())


async def run(
    session: BenchSession, sizes: tuple[int, ...], live: tuple[int, ...], fire: int
) -> list[Result]:
    results = []
    for pending in sorted(set(sizes) | set(live)):
        cost = (
            await asyncio.to_thread(fire_cost_ms, pending, session.workdir)
            if pending in sizes
            else None
        )
        figures: dict[str, Figure] = {
            "pending": pending,
            "fire_1000_due_ms": rounded(cost),
            "lateness_p50_s": None,
            "lateness_p99_s": None,
        }
        if cost is not None:
            log.info("timers: %d pending, 1,000 due fired in %.1f ms", pending, cost)
        if pending in live:
            lateness = await live_lateness(session, pending, fire)
            figures["fired"] = len(lateness)
            figures["lateness_p50_s"] = rounded(percentile(lateness, 50), 3)
            figures["lateness_p99_s"] = rounded(percentile(lateness, 99), 3)
            log.info("timers: %s", figures)
        results.append(Result("timers", figures))
    return results
