"""The rules topic on a broker: read every version, publish one (DESIGN §3.3).

`<prefix>.rules` is compacted with one partition; each record is a
`config.versions.RuleVersion` keyed `<version>:<nonce>`, so compaction keeps every
version and both claims of a contested number (the lower offset wins, `settle`).
The tools (`nudgeflow rules`, PUT /rules), the worker's start, and the what-if backtest
(`load_version`) read it here; the worker's follower (pipeline/live_rules.py) reads it
with its own consumer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

from nudgeflow.config.versions import (
    MAX_DOCUMENT_BYTES,
    RuleVersion,
    check_won,
    decode_version,
    encode_version,
    live_of,
    settle,
)

log = logging.getLogger(__name__)

TOPIC_CONFIG = {
    "cleanup.policy": "compact",
    "max.message.bytes": str(MAX_DOCUMENT_BYTES + 200_000),
}


def rules_topic(prefix: str) -> str:
    return f"{prefix}.rules"


async def ensure_topic(bootstrap: str, topic: str) -> None:
    """Create the compacted one-partition topic if it is not there."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        with contextlib.suppress(TopicAlreadyExistsError):
            await admin.create_topics([NewTopic(topic, 1, 1, topic_configs=dict(TOPIC_CONFIG))])
    finally:
        await admin.close()


async def read_records(bootstrap: str, topic: str, timeout_s: float = 30.0) -> list[RuleVersion]:
    """Every version record on `topic`, in offset order (an absent topic: none).
    A record that does not decode is skipped with a warning, never fatal."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None
    )
    await consumer.start()
    try:
        if topic not in await consumer.topics():
            return []
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        end = (await consumer.end_offsets([tp]))[tp]
        await consumer.seek_to_beginning(tp)
        out: list[RuleVersion] = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while await consumer.position(tp) < end:
            if loop.time() > deadline:
                raise TimeoutError(f"reading {topic} took over {timeout_s:.0f}s")
            batch = await consumer.getmany(tp, timeout_ms=500)
            for message in batch.get(tp, []):
                record = decode_record(message.value, message.offset)
                if record is not None:
                    out.append(record)
        return out
    finally:
        await consumer.stop()


def decode_record(value: bytes | None, offset: int) -> RuleVersion | None:
    if value is None:
        return None  # a tombstone (a losing claim cleaned up)
    try:
        return decode_version(value)
    except Exception as exc:  # a bad record on the topic is skipped, never fatal
        log.warning("rules topic: record at offset %d is not a rules version: %s", offset, exc)
        return None


async def read_versions(bootstrap: str, topic: str) -> dict[int, RuleVersion]:
    """Version number -> the record that holds it."""
    return settle(await read_records(bootstrap, topic))


async def load_version(bootstrap: str, prefix: str, which: str | int) -> RuleVersion:
    """The version `which` ("live" or a number) of the rules on `<prefix>.rules`.
    Its `document` is the YAML (`config.versions.load_document` validates and builds
    it). LookupError when there is no such version."""
    won = await read_versions(bootstrap, rules_topic(prefix))
    if which == "live":
        record = live_of(won)
        if record is None:
            raise LookupError(f"{rules_topic(prefix)} holds no version yet")
        return record
    number = int(which)
    if number not in won:
        known = ", ".join(str(n) for n in sorted(won)) or "none"
        raise LookupError(f"no version {number} on {rules_topic(prefix)} (versions: {known})")
    return won[number]


async def publish(
    bootstrap: str,
    topic: str,
    make: Callable[[RuleVersion | None], RuleVersion],
) -> RuleVersion:
    """Publish `make(live)` and read back whether it won its number; raise
    `config.versions.Conflict` (naming the winner) if another applier's record did."""
    await ensure_topic(bootstrap, topic)
    live = live_of(await read_versions(bootstrap, topic))
    mine = make(live)
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", max_request_size=MAX_DOCUMENT_BYTES + 200_000
    )
    await producer.start()
    try:
        await producer.send_and_wait(topic, encode_version(mine), key=mine.key, partition=0)
        won = await read_versions(bootstrap, topic)
        try:
            check_won(mine, won)
        except Exception:
            with contextlib.suppress(KafkaError):  # the losing claim: a tombstone
                await producer.send_and_wait(topic, None, key=mine.key, partition=0)
            raise
    finally:
        await producer.stop()
    return mine
