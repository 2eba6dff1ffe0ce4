"""Scenario 1: events/s through ingestion + evaluate with the five default rules,
beside a bare Faust agent, a raw aiokafka loop and the engine with its state codec in a
plain loop (bench/engine_loop.py, no Kafka), on the same events in the same run."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import time
from pathlib import Path

from nudgeflow.bench import baselines, configs, engine_loop
from nudgeflow.bench.baselines import Rate
from nudgeflow.bench.kafka_io import produce_bulk, provision
from nudgeflow.bench.results import Result, ratio, rounded
from nudgeflow.bench.session import BenchSession
from nudgeflow.bench.worker_proc import BenchWorker, WorkerFailed
from nudgeflow.bench.workloads import shop_events

log = logging.getLogger(__name__)

PROCESSED = ("nudgeflow_events_applied_total", "nudgeflow_events_duplicate_total")


async def run(session: BenchSession, events: int = 200_000, users: int = 100_000) -> Result:
    prefix = session.prefix("throughput")
    topic = f"{prefix}.events"
    bootstrap, parts = session.bootstrap, session.partitions
    timeout = 300 + events / 10  # generous: this machine is shared
    await provision(bootstrap, prefix, parts)
    records = list(shop_events(events, users, int(time.time() * 1000)))
    await produce_bulk(bootstrap, topic, records)

    log.info("throughput: produced %d events for %d users to %s", events, users, topic)
    engine = await asyncio.to_thread(engine_loop.run, engine_loop.default_engine(), records, parts)
    del records
    log.info("throughput: engine loop %.0f events/s", engine.per_s)
    raw = await baselines.raw_aiokafka(
        bootstrap, topic, f"{prefix}.raw-out", events, parts, timeout
    )
    log.info("throughput: raw aiokafka loop %s", raw)
    bare = await asyncio.to_thread(
        baselines.bare_faust,
        bootstrap, topic, f"{prefix}-bare", session.workdir / "data" / f"{prefix}-bare",
        parts, events, timeout, session.log_dir / f"bare-{prefix}.log",
    )  # fmt: skip
    log.info("throughput: bare Faust agent %s", bare)
    worker = session.worker(configs.default_config(), prefix, roles=("evaluate",))
    ours = await asyncio.to_thread(measure_drain, worker, events, timeout, session.profile_dir)
    worker.stop()
    log.info("throughput: nudgeflow evaluate %s", ours)
    return Result(
        "throughput",
        {
            "events": events,
            "users": users,
            "events_per_s": rounded(ours.per_s),
            "bare_faust_events_per_s": rounded(bare.per_s),
            "raw_aiokafka_events_per_s": rounded(raw.per_s),
            "engine_events_per_s": rounded(engine.per_s),
            "ratio_vs_bare_faust": ratio(ours.per_s, bare.per_s),
            "ratio_vs_raw_aiokafka": ratio(ours.per_s, raw.per_s),
            "ratio_vs_engine": ratio(ours.per_s, engine.per_s),
            "events_per_cpu_s": rounded(ours.per_cpu_s),
            "bare_faust_events_per_cpu_s": rounded(bare.per_cpu_s),
            "raw_aiokafka_events_per_cpu_s": rounded(raw.per_cpu_s),
            "engine_events_per_cpu_s": rounded(engine.per_cpu_s),
            "cpu_ratio_vs_bare_faust": ratio(ours.per_cpu_s, bare.per_cpu_s),
            "cpu_ratio_vs_engine": ratio(ours.per_cpu_s, engine.per_cpu_s),
            "engine_actions_per_event": rounded(engine.actions / max(1, engine.events), 2),
        },
    )


def _processed(worker: BenchWorker) -> float:
    return sum(worker.metric(name) for name in PROCESSED)


def measure_drain(
    worker: BenchWorker, events: int, timeout: float, profile_dir: Path | None
) -> Rate:
    """Start the worker on the pre-produced events; rate between the first poll that saw
    progress and the poll that saw the last event (0.1 s polls)."""
    worker.start()
    ready_after = worker.wait_ready()
    ready_at = time.monotonic()
    deadline = ready_at + timeout
    first: tuple[float, float, float] | None = None
    profiler: subprocess.Popen[bytes] | None = None
    while time.monotonic() < deadline:
        done = _processed(worker)
        now = time.monotonic()
        if first is None and done > 0:
            first = (now, done, worker.cpu_s())
            if profile_dir is not None:
                profiler = _profile(worker, profile_dir)
        if done >= events:
            if profiler is not None:
                profiler.wait(60)
            cpu = worker.cpu_s()
            if first is None or now - first[0] < 0.5:  # tiny run: count from ready
                return Rate(events / max(1e-3, now - ready_at), events / max(1e-3, cpu))
            return Rate((done - first[1]) / (now - first[0]), (done - first[1]) / (cpu - first[2]))
        time.sleep(0.1)
    raise WorkerFailed(
        f"worker applied {_processed(worker):.0f}/{events} events in {timeout:.0f}s "
        f"(ready after {ready_after:.1f}s)"
    )


def _profile(worker: BenchWorker, out_dir: Path) -> subprocess.Popen[bytes]:
    """py-spy over the busy worker for 10 s (raw collapsed stacks, for flame graphs)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / f"py-spy-{worker.prefix}.txt"
    cmd = ["py-spy", "record", "--pid", str(worker.pid), "-d", "10", "-r", "200",
           "-f", "raw", "-o", str(out), "--nonblocking"]  # fmt: skip
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
