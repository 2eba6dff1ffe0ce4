"""`nudgeflow dlq ...`: look at and re-deliver dead-lettered webhooks.

`replay` reads `<prefix>.triggers.dlq` from the beginning to its current end
and re-produces each matching dead letter to `<prefix>.triggers`, marked with
a replay header and the destination it died on, so the deliver agent tries
exactly that destination again even though its dedupe table says "dead".
A trigger already delivered in the meantime is still not sent twice.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

import click
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from nudgeflow.config.topics import TopicNames
from nudgeflow.delivery.records import (
    H_DEAD_AT,
    H_DESTINATION,
    H_REASON,
    H_RULE,
    REPLAY_HEADER,
    header_text,
)


@dataclass(frozen=True)
class DeadLetter:
    key: bytes | None
    value: bytes
    headers: dict[str, bytes]
    timestamp_ms: int

    @property
    def rule(self) -> str | None:
        return header_text(self.headers, H_RULE)

    @property
    def dead_at_ms(self) -> int:
        text = header_text(self.headers, H_DEAD_AT)
        return int(text) if text and text.isdigit() else self.timestamp_ms


def parse_since(text: str, now: datetime | None = None) -> int:
    """`--since`: an ISO 8601 time, or a duration back from now (`30m`, `2h`, `7d`)."""
    from nudgeflow.config.destinations import duration_s

    now = now or datetime.now(tz=UTC)
    try:
        return int((now.timestamp() - duration_s(text)) * 1000)
    except ValueError:
        pass
    when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return int(when.timestamp() * 1000)


def select(
    letters: Iterable[DeadLetter], rule: str | None, since_ms: int | None
) -> list[DeadLetter]:
    """Pure filter: the dead letters a replay re-produces."""
    return [
        d
        for d in letters
        if (rule is None or d.rule == rule)
        and (since_ms is None or d.dead_at_ms >= since_ms)
        and header_text(d.headers, H_REASON) != "bad_record"
    ]


def replay_headers(headers: Mapping[str, bytes]) -> list[tuple[str, bytes]]:
    out = [(REPLAY_HEADER, b"1")]
    if H_DESTINATION in headers:
        out.append((H_DESTINATION, headers[H_DESTINATION]))
    return out


async def read_dlq(broker: str, topic: str, timeout_s: float = 15.0) -> list[DeadLetter]:
    """Every record in the DLQ up to its end offsets at the time of the call."""
    # Subscribing by name (no group) makes the client fetch the topic's metadata
    # and assign all its partitions.
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=broker, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    await consumer.start()
    out: list[DeadLetter] = []
    try:
        tps = sorted(consumer.assignment())
        if not tps:
            return out
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while loop.time() < deadline:
            positions = [await consumer.position(tp) for tp in tps]
            if all(pos >= ends[tp] for pos, tp in zip(positions, tps, strict=True)):
                break
            batch = await consumer.getmany(timeout_ms=300)
            for tp, records in batch.items():
                out.extend(
                    DeadLetter(r.key, r.value or b"", dict(r.headers), r.timestamp)
                    for r in records
                    if r.offset < ends[tp]
                )
        return out
    finally:
        await consumer.stop()


async def replay(broker: str, prefix: str, rule: str | None, since_ms: int | None) -> int:
    topics = TopicNames(prefix)
    chosen = select(await read_dlq(broker, topics.triggers_dlq), rule, since_ms)
    producer = AIOKafkaProducer(bootstrap_servers=broker, acks="all")
    await producer.start()
    try:
        acks = [
            await producer.send(
                topics.triggers, d.value, key=d.key, headers=replay_headers(d.headers)
            )
            for d in chosen
        ]
        for ack in acks:
            await ack
    finally:
        await producer.stop()
    return len(chosen)


@click.group(name="dlq")
def command() -> None:
    """Dead-lettered webhooks."""


@command.command(name="replay")
@click.option("--rule", default=None, help="only dead letters of this rule")
@click.option("--since", default=None, help="only those dead since: ISO time or 2h / 7d ago")
@click.option("--broker", envvar="NUDGEFLOW_BROKER", default="127.0.0.1:9092", show_default=True)
@click.option(
    "--topic-prefix", envvar="NUDGEFLOW_TOPIC_PREFIX", default="nudgeflow", show_default=True
)
def replay_command(rule: str | None, since: str | None, broker: str, topic_prefix: str) -> None:
    """Re-deliver dead letters: re-produce them to the triggers topic."""
    since_ms = parse_since(since) if since else None
    count = asyncio.run(replay(broker, topic_prefix, rule, since_ms))
    click.echo(f"replayed {count} dead letter(s) to {TopicNames(topic_prefix).triggers}")
