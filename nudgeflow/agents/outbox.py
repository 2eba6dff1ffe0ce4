"""The trigger outbox: no lost trigger records, without waiting for Kafka per event.

A trigger record and the state that says "fired" are written by different
producers' batches, and after a kill -9 the local RocksDB may even be ahead of
both. Waiting for each trigger's ack before writing the state would be safe but
costs a broker round trip per firing (milliseconds, so hundreds/s at most).

Instead the record is sent without waiting and also kept in the user's state
(`UserState.outbox`), with a due time that puts the user in the timer index.
When the user is next touched (an event, or that timer), the entry is dropped
if this process saw its ack, kept if the ack is still in flight, and sent again
if this process never sent it (a restart or a rebalance happened in between):
at worst the same `trigger_id` twice, which the deliver agent drops.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from nudgeflow.engine.state import Pending, UserState
from nudgeflow.pipeline import metrics

RECHECK_MS = 1000


class Outbox:
    def __init__(
        self, send: Callable[[bytes, bytes], Any], *, recheck_ms: int = RECHECK_MS
    ) -> None:
        self._send = send  # async (key, value) -> future of the ack
        self.recheck_ms = recheck_ms
        self.in_flight: dict[str, asyncio.Future[Any]] = {}
        self.resent = 0

    async def send(
        self,
        state: UserState,
        key: bytes,
        trigger_id: str,
        record: bytes,
        now_ms: int,
        started: float | None = None,
    ) -> None:
        future = await self._send(key, record)
        self.in_flight[trigger_id] = future
        if started is not None:
            future.add_done_callback(
                lambda _f: metrics.event_to_trigger.observe(time.perf_counter() - started)
            )
        state.outbox.append(Pending(trigger_id, now_ms + self.recheck_ms, record))

    async def settle(self, state: UserState, key: bytes, now_ms: int) -> bool:
        """Drop acknowledged entries; send again the ones this process does not know.

        Returns whether the state changed (and so must be written).
        """
        if not state.outbox:
            return False
        keep: list[Pending] = []
        for entry in state.outbox:
            future = self.in_flight.get(entry.trigger_id)
            if future is not None and future.done() and future.exception() is None:
                del self.in_flight[entry.trigger_id]
                continue
            if future is None or future.done():  # unknown here, or the send failed
                self.in_flight[entry.trigger_id] = await self._send(key, entry.record)
                self.resent += 1
            keep.append(Pending(entry.trigger_id, now_ms + self.recheck_ms, entry.record))
        state.outbox = keep
        return True
