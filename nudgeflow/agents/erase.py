"""The evaluate agent's half of an erasure (tables/erasure.py says the whole of it).

An erase request arrives on `events.by-user` in the user's partition order. Records
first, tombstones after: the audit record and the forget record for the deliver agent
are sent, the partition is held until the forget record's ack (tables/checkpoint.py),
and only then do the state's and the timer entry's tombstones go to the users changelog.
A crash in between replays the request, which finds the state still there and does it
again (the forget record twice is harmless); a crash after it finds nothing, and a
request for a user with no state sends the forget record only (a timeline or retry may
outlive a state erased before) and no audit record, so one erasure leaves one record.

An account that absorbed guest ids (engine/identity.py) has their pointers in other
partitions: each gets an erase request of its own, sent (and acked) before the account's
tombstones, so a crash re-sends them and no pointer outlives the account to route a later
guest event into a re-created profile. A pointer holds no personal data of its own and
gets no audit record (the account's one covers the erasure).
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

import msgspec

from nudgeflow.agents.router import partition_for
from nudgeflow.config.build import engine_secret
from nudgeflow.engine.timefmt import iso_utc
from nudgeflow.observability.clock import now_ms
from nudgeflow.tables import erasure
from nudgeflow.tables import timers as timer_index
from nudgeflow.tables import users as user_table

if TYPE_CHECKING:
    from faust.types import Message

    from nudgeflow.pipeline.probes.pending import PendingTimers
    from nudgeflow.pipeline.runtime import Runtime
    from nudgeflow.tables.checkpoint import Checkpoint

log = logging.getLogger(__name__)


def is_request(message: Message) -> bool:
    return erasure.has_header(message.headers, erasure.ERASE_HEADER)


async def send_request(rt: Runtime, user_key: bytes, value: bytes) -> asyncio.Future[Any]:
    """Put an erase request on `events.by-user`, in the user's partition (its ack to await):
    DELETE /users/<id> and an account's guest pointers are erased the same way."""
    partition = partition_for(user_key, rt.partitions)
    headers = [(erasure.ERASE_HEADER, b"1")]
    return await rt.sender.send(rt.topics.events_by_user, user_key, value, partition, headers)


class Eraser:
    def __init__(self, rt: Runtime, checkpoint: Checkpoint, pending: PendingTimers) -> None:
        self.rt = rt
        self.users = rt.users_direct
        self.checkpoint = checkpoint
        self.pending = pending
        self.secret = engine_secret(warn=False)

    async def apply(self, message: Message) -> None:
        user_key, partition = message.key, message.partition
        if not user_key:
            log.warning("an erase request without a key at offset %d: ignored", message.offset)
            return
        state = user_table.load(self.users, user_key)
        topics, sender = self.rt.topics, self.rt.sender
        if state is not None and state.alias_of is None:
            audit = erasure.Erasure(
                user_hash=erasure.user_hash(self.secret, user_key),
                requested_at=iso_utc(erasure.decode_request(message.value) or now_ms()),
                erased_at=iso_utc(now_ms()),
                partition=partition,
                timers_removed=0 if state.indexed is None else 1,
            )
            record = msgspec.json.encode(audit)
            await sender.send(topics.erasures, audit.user_hash.encode(), record, partition)
        forget = [(erasure.FORGET_HEADER, b"1")]
        ack = await sender.send(topics.triggers, user_key, b"{}", partition, forget)
        self.checkpoint.hold_until(ack)  # the tombstones only once the deliver side has it
        if state is None:
            return
        for guest in state.absorbed or ():
            await self._erase_pointer(guest.encode(), message.value)
        timer_index.remove(self.users, user_key, state.indexed)
        self.pending.moved(state.indexed, None)
        self.users.pop(user_key, None)
        if state.alias_of is None:
            log.info("erased a user (partition %d, hash %s)", partition, audit.user_hash[:16])

    async def _erase_pointer(self, guest: bytes, request: bytes | None) -> None:
        """The erase request for a guest id this account absorbed, in the guest's partition."""
        self.checkpoint.hold_until(await send_request(self.rt, guest, request or b""))
