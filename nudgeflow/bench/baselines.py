"""The two throughput baselines, run on the same events as the worker.

* bare Faust: a subprocess (`bare_faust.py`) doing one table update per event;
* raw aiokafka: consume and produce each record, no state: the ceiling for
  Python on this machine.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from nudgeflow.bench.bare_faust import BareFaust, kill
from nudgeflow.bench.kafka_io import create_topics


@dataclass(frozen=True, slots=True)
class Rate:
    """Events per wall-clock second, and per CPU-second of the process doing the work
    (the steadier figure on a shared machine)."""

    per_s: float
    per_cpu_s: float


async def raw_aiokafka(
    bootstrap: str, topic: str, out_topic: str, count: int, partitions: int, timeout: float
) -> Rate:
    """Events per second of a consume -> produce loop from the first record to the last
    acknowledgement."""
    await create_topics(bootstrap, [out_topic], partitions)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=4 * 1024 * 1024,
    )
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=1)
    await consumer.start()
    await producer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        done, first, cpu = 0, 0.0, 0.0
        deadline = time.monotonic() + timeout
        while done < count and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=200, max_records=2000)
            pending = []
            for msgs in batch.values():
                for m in msgs:
                    if not first:
                        first, cpu = time.time(), time.process_time()
                    pending.append(await producer.send(out_topic, m.value, key=m.key))
            await asyncio.gather(*pending)
            done += len(pending)
        elapsed, cpu = time.time() - first, time.process_time() - cpu
    finally:
        await producer.stop()
        await consumer.stop()
    if done < count:
        raise TimeoutError(f"raw aiokafka loop did {done}/{count} in {timeout:.0f}s")
    return Rate(count / elapsed, count / max(1e-9, cpu))


def bare_faust(
    bootstrap: str,
    topic: str,
    app_id: str,
    data_dir: Path,
    partitions: int,
    count: int,
    timeout: float,
    log_path: Path,
) -> Rate:
    """Events per second of the bare Faust agent, first event to last."""
    proc = BareFaust(bootstrap, topic, app_id, data_dir, partitions, count).spawn(
        log_path, capture=True
    )
    try:
        line = _read_result(proc, timeout)
    finally:
        kill(proc)
    if line is None:
        raise RuntimeError(
            f"bare Faust baseline gave no result (exit {proc.returncode}); see {log_path}"
        )
    result = json.loads(line)
    done = float(result["count"])
    return Rate(
        done / max(1e-9, result["last"] - result["first"]), done / max(1e-9, result["cpu_s"])
    )


def _read_result(proc: subprocess.Popen[str], timeout: float) -> str | None:
    """The first JSON line on the child's stdout, or None at timeout/exit."""
    import selectors

    assert proc.stdout is not None
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if sel.select(timeout=1.0):
            line = proc.stdout.readline()
            if not line:
                return None
            if line.startswith("{"):
                return line
        elif proc.poll() is not None:
            return None
    return None
