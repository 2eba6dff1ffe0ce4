"""Sending one record to Kafka: the one interface every writer uses.

Implemented by `pipeline/producer.py` (Faust's own aiokafka producer, partition given);
tables, agents and the web ingestion take a `RecordSender` so tests can give them any.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, Protocol

Headers = Sequence[tuple[str, bytes]]


class RecordSender(Protocol):
    async def send(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        partition: int | None = None,
        headers: Headers | None = None,
    ) -> asyncio.Future[Any]:
        """Queue one record and return the future of its ack (await it for durability)."""
        ...
