"""aiokafka plumbing for the bench: topics, bulk and paced producing, reading records back."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Container, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from nudgeflow.bench.workloads import Keyed
from nudgeflow.config.topics import TopicNames
from nudgeflow.pipeline.provision import topic_names

_IN_FLIGHT = 20_000  # sends awaited in chunks: bounded memory, batches stay full
_IN_FLIGHT_BATCHES = 64


async def create_topics(
    bootstrap: str,
    names: Iterable[str],
    partitions: int,
    topic_configs: Mapping[str, str] | None = None,
) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=30_000)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        configs = dict(topic_configs or {})
        wanted = [
            NewTopic(n, partitions, 1, topic_configs=configs) for n in names if n not in existing
        ]
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


class _Acks:
    """Send futures awaited in chunks: bounded memory while batches stay full."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.pending: list[asyncio.Future[object]] = []

    async def add(self, future: asyncio.Future[object]) -> None:
        self.pending.append(future)
        if len(self.pending) >= self.limit:
            await self.wait()

    async def wait(self) -> None:
        await asyncio.gather(*self.pending)
        self.pending.clear()


async def produce_bulk(bootstrap: str, topic: str, records: Iterable[Keyed]) -> int:
    """Produce keyed records (default partitioner: murmur2 of the key, like Java) and wait
    for every acknowledgement; returns the count."""
    producer = bulk_producer(bootstrap)
    await producer.start()
    sent = 0
    try:
        acks = _Acks(_IN_FLIGHT)
        for key, value in records:
            await acks.add(await producer.send(topic, value, key=key))
            sent += 1
        await acks.wait()
    finally:
        await producer.stop()
    return sent


async def produce_batched(
    bootstrap: str, topic: str, records: Iterable[tuple[int, bytes, bytes]]
) -> int:
    """Produce (partition, key, value) records, in order per partition, in full batches
    built here (no per-record future: ~10x cheaper than `send` for millions of records);
    waits for every acknowledgement, returns the count."""
    producer = bulk_producer(bootstrap)
    await producer.start()
    sent = 0
    try:
        acks = _Acks(_IN_FLIGHT_BATCHES)
        batches: dict[int, Any] = {}  # partition -> open aiokafka BatchBuilder
        for partition, key, value in records:
            batch = batches.get(partition)
            if batch is None or batch.append(key=key, value=value, timestamp=None) is None:
                if batch is not None:  # full: send it, start the next
                    await acks.add(await producer.send_batch(batch, topic, partition=partition))
                batch = batches[partition] = producer.create_batch()
                batch.append(key=key, value=value, timestamp=None)
            sent += 1
        for partition, batch in batches.items():
            await acks.add(await producer.send_batch(batch, topic, partition=partition))
        await acks.wait()
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


class KeysSeen:
    """`until` for `read_topic`: true once `count` distinct keys of `wanted` were read.

    Fed each batch once: re-counting everything read on every poll made the bench
    process's reader quadratic, and on this 2-core machine it took CPU from the
    worker it measures.
    """

    def __init__(self, wanted: Container[bytes | None], count: int) -> None:
        self.wanted = wanted
        self.count = count
        self.seen: set[bytes | None] = set()

    def __call__(self, batch: list[Received]) -> bool:
        self.seen.update(r.key for r in batch if r.key in self.wanted)
        return len(self.seen) >= self.count


async def read_topic(
    bootstrap: str,
    topic: str,
    partitions: int,
    *,
    until: Callable[[list[Received]], bool],
    timeout: float,
    started: asyncio.Event | None = None,
) -> list[Received]:
    """Read a (provisioned) topic from the beginning until `until(batch)` says so (it is
    given each new batch once) or the timeout, without a consumer group.

    Polls at most every 100 ms: the figures use each record's own timestamp, not when
    it was read, so a lazier reader changes nothing but the CPU it takes."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=100,
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
        done = until([])
        while time.monotonic() < deadline and not done:
            batch = await consumer.getmany(timeout_ms=100, max_records=5000)
            new = [Received(m.key, m.value, m.timestamp) for ms in batch.values() for m in ms]
            out.extend(new)
            done = until(new)
    finally:
        await consumer.stop()
    return out
