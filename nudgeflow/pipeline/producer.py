"""Producing records from an agent: Faust's own aiokafka producer, partition given.

Faust's own producer, because Faust flushes it before every offset commit:
a committed source offset never runs ahead of the records its event produced.

Not through Faust's `Producer.send`: per record it dispatches the
`on_produce_message` signal and, without a partition, runs the partitioner
over fresh metadata sets; ~50 µs of CPU per record more than aiokafka's own
`send` with the partition given (docs/performance.md, "Producing"). The
agents know the partition: every topic they write for a user (state
changelog, decisions, triggers, conversions) is co-partitioned with the
user's events (pipeline/provision.py creates them with the same count), so a
user's records go to the partition of the record being handled, which is
where Kafka's default partitioner would put them too.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka import AIOKafkaProducer
from faust.types import AppT

from nudgeflow.types.records import Headers


class KafkaRecordSender:
    """`types.records.RecordSender` on the app's own producer: the one way to send a record."""

    def __init__(self, app: AppT) -> None:
        self.app = app
        self._producer: AIOKafkaProducer | None = None

    def _aiokafka(self) -> AIOKafkaProducer:
        if self._producer is None:  # the Faust producer creates it when it starts
            self._producer = self.app.producer._ensure_producer()  # type: ignore[attr-defined]
        return self._producer

    async def send(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        partition: int | None = None,
        headers: Headers | None = None,
    ) -> asyncio.Future[Any]:
        """Queue one record; returns the future of its ack. Raises KafkaError if it cannot
        even be queued (no metadata for the topic within the producer's timeout)."""
        future: asyncio.Future[Any] = await self._aiokafka().send(
            topic, value, key=key, partition=partition, headers=list(headers) if headers else None
        )
        return future
