"""The evaluate agent's half of an identity merge (engine/identity.py has the protocol).

Three kinds of record, each in the partition order of the id it concerns:

* An `identify_merge` request (an event keyed by the anonymous id A, from
  events/segment.py or any producer): `request`. When A has a state, the order is
  pointer first: A's state becomes a pointer to K that still holds the merge record
  (`moving`), and only once that write is acknowledged by the changelog
  (`DirectTable.acked`) is the record sent, keyed by K, on `<prefix>.events.by-user`
  (header `nudgeflow-merge`); the pointer without the record is written behind the
  record's ack (a hold, tables/checkpoint.py). So a kill -9 at any point leaves
  either A's untouched state (the replayed request starts again; A's timers may fire
  under A meanwhile, and the record then carries what is left), or the pointer with its
  record (the replay, or A's next event, sends it again: same merge id, applied once),
  never A's armed runs next to a copy of them at K. A with no state needs no such
  care: the record (a notice, K absorbed A) is sent, then the pointer written.
* A merge record (`receive`): applied to K's state in K's order, or forwarded along a
  pointer (at most `MAX_HOPS`; past that it goes back to A, which keeps its profile:
  `merge_refused` reason `alias_chain_too_long`, nothing lost).
* Any other event for a pointer: `redirect` re-keys it to the id it points to, with
  its hop count in header `nudgeflow-alias-hops`.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import msgspec

from nudgeflow.agents import router
from nudgeflow.agents.plan import Plan, plan
from nudgeflow.engine import identity
from nudgeflow.engine.state import UserState
from nudgeflow.events.model import KNOWN_ID, MERGE_ID, Event, encode_event
from nudgeflow.events.parse import EventError
from nudgeflow.observability import metrics
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

MERGE_HEADER = "nudgeflow-merge"
HOPS_HEADER = "nudgeflow-alias-hops"
ORIGIN_HEADER = "nudgeflow-alias-origin"  # the id the producer sent the event under
TOO_LONG = "alias_chain_too_long"


@dataclass(frozen=True, slots=True)
class Redirect:
    """What the evaluate agent's engine call returns for a pointer's state."""

    pointer: UserState


def is_merge(message: Message) -> bool:
    return erasure.has_header(message.headers, MERGE_HEADER)


def hops_of(message: Message) -> tuple[int, str | None]:
    """The pointers a record has followed so far (0: it came from a producer), and the
    id it was sent under."""
    headers: Any = message.headers or ()
    pairs = headers.items() if isinstance(headers, dict) else headers
    hops, origin = 0, None
    for name, value in pairs:
        if name == HOPS_HEADER:
            try:
                hops = int(value)
            except (TypeError, ValueError):
                hops = identity.MAX_HOPS + 1
        elif name == ORIGIN_HEADER:
            origin = bytes(value).decode(errors="replace")
    return hops, origin


Store = Callable[[bytes, Plan], None]
ToDlq = Callable[["Message", EventError], Awaitable[None]]


class Identity:
    def __init__(
        self,
        rt: Runtime,
        checkpoint: Checkpoint,
        pending: PendingTimers,
        store: Store,
        to_dlq: ToDlq,
    ) -> None:
        self.rt = rt
        self.users = rt.users_direct
        self.checkpoint = checkpoint
        self.pending = pending
        self.store = store  # the evaluate agent's state + timer-index write
        self.to_dlq = to_dlq

    async def request(self, event: Event, user_key: bytes, message: Message) -> None:
        """Step 1, in A's partition: move A's state to K (see the module docstring)."""
        known, merge_id = event.properties.get(KNOWN_ID), event.properties.get(MERGE_ID)
        for name, value in ((KNOWN_ID, known), (MERGE_ID, merge_id)):
            if not isinstance(value, str) or not value:
                error = f"an {event.type} needs properties.{name}, a non-empty string"
                await self.to_dlq(message, EventError("invalid_merge", error, f"properties.{name}"))
                return
        assert isinstance(known, str) and isinstance(merge_id, str)
        state = user_table.load(self.users, user_key)
        step = identity.request(state, event.user_id, known, merge_id)
        if isinstance(step, identity.Refused):
            _refused(event.user_id, known, step.reason)
            return
        if step.record.state is None:  # A had nothing: the notice, then the pointer
            await self._send(step.record.known, step.record)
            user_table.save(self.users, user_key, identity.settled(step.pointer))
        else:
            await self._move(user_key, state, step)
        metrics.identity_merges.labels(outcome="moved").inc()

    async def _move(self, user_key: bytes, state: UserState | None, step: identity.Move) -> None:
        if state is not step.pointer:  # first time: the pointer (with its record) first
            user_table.save(self.users, user_key, step.pointer)
            if state is not None and state.indexed is not None:
                timer_index.remove(self.users, user_key, state.indexed)
                self.pending.moved(state.indexed, None)
        await self.users.acked(user_key)
        await self.settle(user_key, step.pointer)

    async def settle(self, user_key: bytes, pointer: UserState) -> None:
        """Send the merge record a pointer holds, then drop it from the pointer."""
        if pointer.moving is None:
            return
        record = identity.decode_record(pointer.moving)
        await self._send(record.known, record)
        user_table.save(self.users, user_key, identity.settled(pointer))

    async def _send(self, to: str, record: identity.MergeRecord) -> None:
        """The record on `events.by-user`, keyed by `to`; this partition's later writes
        wait for its ack."""
        topic = self.rt.topics.events_by_user
        value = identity.encode_record(record)
        headers = [(MERGE_HEADER, b"1")]
        ack = await self.rt.sender.send(topic, to.encode(), value, None, headers)
        self.checkpoint.hold_until(ack)

    async def receive(self, message: Message) -> None:
        """Step 2, in the partition of the id the record is addressed to."""
        user_key: bytes = message.key or b""
        try:
            record = identity.decode_record(message.value or b"")
            user_id = user_key.decode()
            if not user_id:
                raise UnicodeDecodeError("utf-8", user_key, 0, 0, "a merge record needs a key")
        except (msgspec.DecodeError, UnicodeDecodeError) as exc:
            error = EventError("invalid_merge", f"not a merge record: {exc}"[:300])
            await self.to_dlq(message, error)
            return
        state = user_table.load(self.users, user_key)
        out = identity.receive(state, user_id, record, now_ms())
        if isinstance(out, identity.Merged):
            self.store(user_key, plan(out.state, []))
            outcome = "returned" if out.returned else "merged"
            log.info("merged %r into %r (%s, merge %s)", record.anonymous, user_id, outcome,
                     record.merge_id)  # fmt: skip
        elif isinstance(out, identity.Forward):
            await self._send(out.to, out.record)
            outcome = "forwarded"
            if out.back:  # too deep: home again, where it stays
                _refused(record.anonymous, record.known, TOO_LONG)
        else:
            outcome = "dropped_" + out.reason
        metrics.identity_merges.labels(outcome=outcome).inc()

    async def redirect(self, event: Event, pointer: UserState, message: Message) -> None:
        """Step 3: an event for a merged-away id goes on to the id it was merged into."""
        hops, origin = hops_of(message)
        origin = origin or event.user_id
        if hops >= identity.MAX_HOPS:  # to the DLQ as the producer sent it: nothing lost
            error = EventError(TOO_LONG, f"{origin!r} is aliased over {hops} ids deep", "user_id")
            sent = msgspec.structs.replace(event, user_id=origin)
            headers = router.dlq_headers(error, message.partition, message.offset)
            metrics.dead_letters.labels(topic="events.dlq").inc()
            dlq = self.rt.topics.events_dlq
            await self.rt.sender.send(dlq, origin.encode(), encode_event(sent), None, headers)
            return
        user_key = event.user_id.encode()
        await self.settle(user_key, pointer)  # a record a crash left in the pointer: first
        target = pointer.alias_of or ""
        moved = msgspec.structs.replace(event, user_id=target)
        headers = [(HOPS_HEADER, str(hops + 1).encode()), (ORIGIN_HEADER, origin.encode())]
        topic = self.rt.topics.events_by_user
        await self.rt.sender.send(topic, target.encode(), encode_event(moved), None, headers)
        metrics.identity_rerouted.inc()


def _refused(anonymous: str, known: str, reason: str) -> None:
    """A request that changes nothing: `merge_refused` with the reason, in the log."""
    outcome = "noop" if reason == "noop" else f"refused_{reason}"
    metrics.identity_merges.labels(outcome=outcome).inc()
    level = logging.DEBUG if reason == "noop" else logging.INFO
    log.log(level, "merge_refused anonymous=%r known=%r reason=%s", anonymous, known, reason)
