"""The HTTP ingestion sink: produce validated events to `<prefix>.events`.

A call returns only after Kafka acknowledged every event, so a 202 always
means "stored"; if the broker cannot be reached in time the caller gets a 503
(and may retry: duplicates are dropped by `event_id`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from nudgeflow.events.model import Event, encode_event
from nudgeflow.types.records import RecordSender
from nudgeflow.types.sinks import SinkUnavailable


class KafkaEventSink:
    def __init__(self, sender: RecordSender, topic: str, *, timeout_s: float = 10.0) -> None:
        self.sender = sender
        self.topic = topic
        self.timeout_s = timeout_s

    async def send(self, events: Sequence[Event]) -> None:
        try:
            await asyncio.wait_for(self._send_all(events), self.timeout_s)
        except TimeoutError as exc:
            raise SinkUnavailable(
                "event store unavailable (Kafka did not acknowledge in time)"
            ) from exc
        except Exception as exc:  # aiokafka/faust producer errors
            raise SinkUnavailable(f"event store unavailable ({type(exc).__name__})") from exc

    async def _send_all(self, events: Sequence[Event]) -> None:
        futures = [
            await self.sender.send(self.topic, e.user_id.encode(), encode_event(e)) for e in events
        ]
        await asyncio.gather(*futures)
