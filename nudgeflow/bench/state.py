"""Scenarios 4 and 5: a worker holding N users' state: its RSS, and its time from a
kill -9 to ready again.

Both use one loaded worker per run (loading 1,000,000 users takes
1,000,000 / throughput seconds): `memory` loads it, `recovery` reuses it.
"""

from __future__ import annotations

import asyncio
import logging
import time

from nudgeflow.bench import configs
from nudgeflow.bench.kafka_io import produce_bulk, provision
from nudgeflow.bench.results import Result, rounded
from nudgeflow.bench.session import BenchSession
from nudgeflow.bench.worker_proc import BenchWorker, wait_for_metric
from nudgeflow.bench.workloads import small_events

log = logging.getLogger(__name__)

SETTLE_S = 5.0  # let the last writes, commits and compactions land before reading RSS


async def loaded_worker(session: BenchSession, users: int) -> BenchWorker:
    """A ready worker (default rules, evaluate role) that has applied one event per user."""
    if users in session.loaded:
        return session.loaded[users]
    prefix = session.prefix(f"state{users}")
    await provision(session.bootstrap, prefix, session.partitions)
    began = time.monotonic()
    now = int(time.time() * 1000)
    await produce_bulk(session.bootstrap, f"{prefix}.events", small_events(users, now))
    log.info("state: produced %d events in %.1fs", users, time.monotonic() - began)
    worker = session.worker(configs.default_config(), prefix, roles=("evaluate",)).start()
    await asyncio.to_thread(worker.wait_ready)
    await asyncio.to_thread(
        wait_for_metric, worker, "nudgeflow_events_applied_total", users, 600 + users / 20, 1.0
    )
    log.info("state: %d users applied after %.1fs", users, time.monotonic() - began)
    session.loaded[users] = worker
    return worker


async def memory(session: BenchSession, users: int) -> Result:
    worker = await loaded_worker(session, users)
    await asyncio.sleep(SETTLE_S)
    rss = worker.rss_mb()
    log.info("memory: %d users, RSS %.0f MB", users, rss)
    return Result("memory", {"users": users, "rss_mb": rounded(rss)})


async def recovery(session: BenchSession, users: int) -> Result:
    """kill -9, start again on the same data dir, time until /ready answers 200.

    Includes the consumer group noticing the dead member (session timeout) and
    restoring the tables from the changelog past the last flushed offsets.
    """
    worker = await loaded_worker(session, users)
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
