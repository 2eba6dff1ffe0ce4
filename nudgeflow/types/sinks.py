"""Where ingestion puts validated events: `web/sink.py` implements it over Kafka."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from nudgeflow.events.model import Event


class SinkUnavailable(Exception):
    """The event store (Kafka) cannot take events now; the caller should retry."""


class EventSink(Protocol):
    async def send(self, events: Sequence[Event]) -> None:
        """Resolve once Kafka acknowledged all `events`; raise `SinkUnavailable` if it cannot."""
        ...
