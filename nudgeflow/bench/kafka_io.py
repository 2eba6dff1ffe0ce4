"""aiokafka plumbing for the bench: topics, bulk and paced producing, reading records back."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from nudgeflow.bench.workloads import Keyed
from nudgeflow.pipeline.provision import topic_names
from nudgeflow.pipeline.topics import TopicNames

_IN_FLIGHT = 20_000  # sends awaited in chunks: bounded memory, batches stay full


async def create_topics(bootstrap: str, names: Iterable[str], partitions: int) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=30_000)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        wanted = [NewTopic(n, partitions, 1) for n in names if n not in existing]
        if wanted:
            with contextlib.suppress(TopicAlreadyExistsError):  # a concurrent creator won
                await admin.create_topics(wanted)
    finally:
        await admin.close()


async def provision(bootstrap: str, prefix: str, partitions: int) -> None:
    """Every topic a worker of this prefix uses, created before anything is produced."""
    await create_topics(bootstrap, topic_names(TopicNames(prefix), 7), partitions)


def bulk_producer(bootstrap: str) -> AIOKafkaProducer:
    return AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        linger_ms=20,
        max_batch_size=256 * 1024,
        max_request_size=4 * 1024 * 1024,
    )


async def produce_bulk(bootstrap: str, topic: str, records: Iterable[Keyed]) -> int:
    """Produce keyed records (default partitioner: murmur2 of the key, like Java) and wait
    for every acknowledgement; returns the count."""
    producer = bulk_producer(bootstrap)
    await producer.start()
    sent = 0
    try:
        pending: list[asyncio.Future[object]] = []
        for key, value in records:
            pending.append(await producer.send(topic, value, key=key))
            sent += 1
            if len(pending) >= _IN_FLIGHT:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return sent


async def produce_paced(
    bootstrap: str,
    topic: str,
    make: Callable[[int, int], Keyed],
    rate: float,
    seconds: float,
) -> int:
    """Send `rate` records per second for `seconds`; `make(n, now_ms)` builds record n.

    Sends in 5 ms slices to catch up with the schedule, so the rate holds on a busy
    machine without a burst at the end. Returns the number sent.
    """
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=0)
    await producer.start()
    total = int(rate * seconds)
    sent = 0
    pending: list[asyncio.Future[object]] = []
    try:
        began = time.monotonic()
        while sent < total:
            due = min(total, int((time.monotonic() - began) * rate) + 1)
            while sent < due:
                key, value = make(sent, int(time.time() * 1000))
                pending.append(await producer.send(topic, value, key=key))
                sent += 1
            if len(pending) > 5000:
                await asyncio.gather(*pending)
                pending.clear()
            await asyncio.sleep(0.005)
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return sent


@dataclass(frozen=True, slots=True)
class Received:
    key: bytes | None
    value: bytes | None
    timestamp_ms: int  # the record's CreateTime: when its producer sent it
    arrived_s: float  # time.time() when this consumer got it


async def read_topic(
    bootstrap: str,
    topic: str,
    partitions: int,
    *,
    until: Callable[[list[Received]], bool],
    timeout: float,
    started: asyncio.Event | None = None,
) -> list[Received]:
    """Read a (provisioned) topic from the beginning until `until(records)` or timeout,
    without a consumer group."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=5,
    )
    await consumer.start()
    out: list[Received] = []
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        deadline = time.monotonic() + timeout
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        if started is not None:
            started.set()
        while time.monotonic() < deadline and not until(out):
            batch = await consumer.getmany(timeout_ms=100, max_records=5000)
            now = time.time()
            for msgs in batch.values():
                out.extend(Received(m.key, m.value, m.timestamp, now) for m in msgs)
    finally:
        await consumer.stop()
    return out
