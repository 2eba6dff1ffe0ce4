"""Scenarios 4 and 5: a worker holding N users' state: its RSS, and its time from a
kill -9 to ready again.

Both use one loaded worker per run: `memory` loads it, `recovery` reuses it. Two ways
to load (`--load`): `seed` (default) writes the users' changelog records straight into
the users changelog and lets a fresh worker restore them (bench/seed.py: ~1 min for
1,000,000 users); `events` produces one `login` per user and lets the worker apply them
(1,000,000 / throughput seconds: ~20 min at 800 events/s).
"""

from __future__ import annotations

import asyncio
import logging
import time

from nudgeflow.bench import configs, seed
from nudgeflow.bench.kafka_io import produce_bulk, provision
from nudgeflow.bench.results import Figure, Result, rounded
from nudgeflow.bench.session import BenchSession, LoadedWorker
from nudgeflow.bench.worker_proc import wait_for_metric
from nudgeflow.bench.workloads import small_events
from nudgeflow.config.build import build_engine
from nudgeflow.config.loader import load_config

log = logging.getLogger(__name__)

SETTLE_S = 5.0  # let the last writes, commits and compactions land before reading RSS


async def loaded_worker(session: BenchSession, users: int) -> LoadedWorker:
    """A ready worker (default rules, evaluate role) holding the state of one `login` per
    user (one armed `re_engagement` timer each)."""
    if users in session.loaded:
        return session.loaded[users]
    prefix = session.prefix(f"state{users}")
    await provision(session.bootstrap, prefix, session.partitions)
    began = time.monotonic()
    now = int(time.time() * 1000)
    config = configs.default_config()
    if session.load == "seed":
        engine = build_engine(load_config(config), secret=b"bench")
        records = await seed.seed_users(
            session.bootstrap, prefix, engine, seed.first_events(users, now), now,
            session.partitions,
        )  # fmt: skip
        log.info("state: seeded %d changelog records in %.1fs", records, time.monotonic() - began)
    else:
        await produce_bulk(session.bootstrap, f"{prefix}.events", small_events(users, now))
        log.info("state: produced %d events in %.1fs", users, time.monotonic() - began)
    worker = session.worker(config, prefix, roles=("evaluate",)).start()
    started = time.monotonic()
    await asyncio.to_thread(worker.wait_ready, 600 + users / 1000)
    ready_s = time.monotonic() - started
    rss_ready = worker.rss_mb()
    if session.load == "seed":
        # Every seeded user has one index entry; the worker counts them once assigned.
        await asyncio.to_thread(wait_for_metric, worker, "nudgeflow_timers_pending", users, 300)
    else:
        await asyncio.to_thread(
            wait_for_metric, worker, "nudgeflow_events_applied_total", users, 600 + users / 20, 1.0
        )
    log.info("state: %d users loaded after %.1fs", users, time.monotonic() - began)
    loaded = session.loaded[users] = LoadedWorker(worker, ready_s, rss_ready)
    return loaded


async def memory(session: BenchSession, users: int) -> Result:
    loaded = await loaded_worker(session, users)
    await asyncio.sleep(SETTLE_S)
    rss = loaded.worker.rss_mb()
    log.info("memory: %d users, RSS %.0f MB (%.0f MB at ready)", users, rss, loaded.rss_ready_mb)
    figures: dict[str, Figure] = {
        "users": users,
        "rss_mb": rounded(rss),
        "rss_ready_mb": rounded(loaded.rss_ready_mb),
        "load": session.load,
        "ready_s": rounded(loaded.ready_s, 2),  # with `seed`: restoring every user
    }
    return Result("memory", figures)


async def recovery(session: BenchSession, users: int) -> Result:
    """kill -9, start again on the same data dir, time until /ready answers 200.

    Includes the consumer group noticing the dead member (session timeout) and
    restoring the tables from the changelog past the last flushed offsets.
    """
    worker = (await loaded_worker(session, users)).worker
    await asyncio.sleep(SETTLE_S)
    worker.kill()
    killed = time.monotonic()
    worker.start()
    await asyncio.to_thread(worker.wait_ready, 600.0, 0.05)
    recovery_s = time.monotonic() - killed
    log.info("recovery: %d users, ready %.1fs after kill -9", users, recovery_s)
    rss = worker.rss_mb()
    return Result(
        "recovery", {"users": users, "recovery_s": rounded(recovery_s, 2), "rss_mb": rounded(rss)}
    )
