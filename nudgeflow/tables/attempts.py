"""The `attempts` table: failed or overrun attempts at handling one record, kept durably.

A poison record (one whose handling raises, or runs past the handling budget, every
time) must reach the events DLQ after `max_attempts` tries, even when the tries are made
by different processes: the worker may be killed in the middle of one, or lose the
partition to another worker. So the count lives in a changelog-backed table partitioned
like the events, and moves with the partition.

Keys: `r|<topic>|<partition>|<offset>` for a source record; `t|<deadline>|<user>` for one
due user's timer (a tick fires many users: each is tried on its own). Values: JSON
`Attempts`. A key exists only while something failed or ran long: a record handled in
time costs no write at all. A count is written, and acknowledged by the broker, *before*
the next attempt starts (for a long attempt, while it still runs), so a crash during an
attempt never loses a count it made; the agents' ordering for state writes
(tables/checkpoint.py) is untouched, as this table has its own queue and no holds.
"""

from __future__ import annotations

import faust
import msgspec

from nudgeflow.tables import options
from nudgeflow.tables.direct import DirectTable
from nudgeflow.tables.schema import raw_table

NAME = "attempts"

TIMEOUT = "processing_timeout"  # the attempt ran past the handling budget
ERROR = "processing_error"  # the attempt raised


class Attempts(msgspec.Struct, frozen=True, kw_only=True):
    count: int  # attempts counted so far, the current one included once it is written
    reason: str  # TIMEOUT or ERROR, of the last counted attempt
    error: str = ""  # human text of the last failure
    final: bool = False  # quarantine without another attempt (it held the event loop)


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(Attempts)


def record_key(topic: str, partition: int, offset: int) -> bytes:
    return f"r|{topic}|{partition}|{offset}".encode()


def timer_key(deadline_ms: int, user_key: bytes) -> bytes:
    return f"t|{deadline_ms}|".encode() + user_key


def define(app: faust.App, partitions: int) -> faust.Table:
    return raw_table(
        app,
        NAME,
        partitions,
        options.small(),
        "record or timer -> failed/overrun handling attempts (poison quarantine)",
    )


class AttemptBook:
    """Reads and durable writes of attempt counts, in the current record's partition."""

    def __init__(self, table: DirectTable) -> None:
        self.table = table

    def get(self, key: bytes) -> Attempts | None:
        raw = self.table.get(key)
        return _decoder.decode(raw) if raw else None

    async def count(self, key: bytes, attempts: Attempts) -> None:
        """Store `attempts`; returns once the broker has it (it survives a kill -9)."""
        await self.table.put_acked(key, _encoder.encode(attempts))

    def clear(self, key: bytes) -> None:
        """Forget the key (handled, or quarantined); a no-op when nothing was counted."""
        self.table.pop(key, None)
