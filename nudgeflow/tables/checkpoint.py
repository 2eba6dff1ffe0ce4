"""The write ordering that makes "no lost trigger" true, in one place.

For every source record (an event, a re-keyed event, a tick) the evaluate agent goes
through these steps, in this order, per partition:

0. **Encode.** The engine step is encoded whole, its records and the new state, before
   anything is sent (agents/plan.py): a step that cannot be stored fails here and
   leaves no record behind, so a decision never describes a state that was not written.
1. **Hold.** Sending a trigger record puts a *hold* on the user's partition
   (`hold_until(ack)`): every changelog write queued after it (the state that says
   "fired", its timer-index changes, and anything later in that partition, which keeps
   the changelog in order) waits for the trigger's ack (tables/write_queue.py).
2. **Send.** `flush()` hands the queued writes that no hold blocks to the producer, in
   the order they were made; a released hold flushes what waited behind it.
3. **Ack.** The broker acknowledges each changelog record. A record the producer gives
   up on stops the worker: nothing after it may reach RocksDB (tables/direct.py).
4. **RocksDB.** The acknowledged prefix of a partition's writes goes to RocksDB in one
   WriteBatch with the partition's persisted changelog offset, so the local DB is
   always a prefix of the changelog and recovery ends in the changelog's own state.
5. **Commit.** `after_sent(ack_source)` acknowledges the source record to Faust once
   every write it made is *sent* (step 2); Faust flushes the producer before it
   commits, so a committed offset never runs ahead of its changelog records.

A batch (agents/batch.py) keeps the order: all its records are sent (steps 0-1), then
each user's state is written once (queued behind the holds), then every source record
gets its step-5 marker, in offset order, behind those writes; one flush sends the lot.

So the changelog can never say "fired" for a trigger that is not in Kafka; after a
crash the replayed record sends the same deterministic trigger id again, which the
deliver agent drops. docs/architecture.md, "No lost triggers", and
docs/reliability.md hold the measurements behind each step.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from nudgeflow.tables.direct import DirectTable


class Checkpoint:
    """Steps 1, 2 and 5 as the agent calls them; 3 and 4 happen in `DirectTable`."""

    def __init__(self, table: DirectTable) -> None:
        self.table = table

    def hold_until(self, trigger_ack: asyncio.Future[Any]) -> None:
        """Step 1: later writes of the current partition wait for `trigger_ack`."""
        self.table.hold_until(trigger_ack)

    async def flush(self) -> None:
        """Step 2: send what no hold blocks, in order; on a Kafka error, retry the call."""
        await self.table.flush()

    def after_sent(self, ack_source: Callable[[], Any]) -> None:
        """Step 5: acknowledge the source record once its writes so far are sent."""
        self.table.after_sent(ack_source)
