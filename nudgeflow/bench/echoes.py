"""The latency baselines: services that answer each ping with one record.

The latency scenario paces the same pings at the same rates through each of
these and through a Nudgeflow worker, and reads the answers the same way
(their Kafka CreateTime minus the ping's send time), so the worker's figure
has a floor beside it measured in the same run on the same machine:

* bare Faust: `bare_faust.py` in echo mode, a subprocess doing one RocksDB table
  update and one `topic.send` per event, with a worker's Faust settings;
* raw aiokafka: a consume -> produce loop in this process, no state: the floor
  for Python on this machine.

Both write `{"trigger_id": "<key>"}` to `<prefix>.triggers`, what `Pings.timings`
expects of a trigger record.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from nudgeflow.bench.bare_faust import BareFaust, answer, kill
from nudgeflow.pipeline.app import PRODUCER_LINGER_MS
from nudgeflow.pipeline.consumer import FETCH_MAX_WAIT_MS

Echo = Callable[[str, str, int, Path], contextlib.AbstractAsyncContextManager[None]]


@contextlib.asynccontextmanager
async def bare_faust(
    bootstrap: str, prefix: str, partitions: int, workdir: Path
) -> AsyncIterator[None]:
    """A bare Faust echo agent on `<prefix>.events` for the length of the block."""
    log_path = workdir / "logs" / f"bare-{prefix}.log"
    proc = BareFaust(
        bootstrap, f"{prefix}.events", f"{prefix}-bare", workdir / "data" / prefix,
        partitions, 0, f"{prefix}.triggers",
    ).spawn(log_path, capture=False)  # fmt: skip
    try:
        yield
    finally:
        exited = await asyncio.to_thread(kill, proc)
    if exited is not None:  # it should run until killed: its figures are not real
        raise RuntimeError(f"the bare Faust echo exited early ({exited}); see {log_path}")


@contextlib.asynccontextmanager
async def raw_aiokafka(
    bootstrap: str, prefix: str, partitions: int, workdir: Path
) -> AsyncIterator[None]:
    """A consume -> produce echo loop on `<prefix>.events` for the length of the block.

    Its consumer holds fetches of idle partitions and its producer lingers as long as
    a worker's (pipeline/consumer.py, pipeline/app.py)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=FETCH_MAX_WAIT_MS,
    )
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", linger_ms=PRODUCER_LINGER_MS
    )
    await consumer.start()
    await producer.start()
    out = f"{prefix}.triggers"

    async def loop() -> None:
        while True:
            batch = await consumer.getmany(timeout_ms=500, max_records=2000)
            for tp, records in batch.items():
                for r in records:
                    await producer.send(out, answer(r.key), key=r.key, partition=tp.partition)

    tps = [TopicPartition(f"{prefix}.events", p) for p in range(partitions)]
    consumer.assign(tps)
    await consumer.seek_to_beginning(*tps)
    task = asyncio.create_task(loop())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await producer.stop()
        await consumer.stop()


ECHOES: dict[str, Echo] = {"bare_faust": bare_faust, "raw_aiokafka": raw_aiokafka}
