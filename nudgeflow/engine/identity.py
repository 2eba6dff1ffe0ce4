"""Identity merge (DESIGN §3.2): a guest's profile follows them into their account.

A Segment call that carries both `anonymousId` A and `userId` K (or an `alias`,
`previousId` A -> `userId` K) becomes, besides its normal event, an `identify_merge`
request keyed by A (events/segment.py). The protocol, in the partitions' own order:

1. In A's partition (`request`): A's state becomes a *pointer* `{alias_of: K}` that
   still holds the merge record being moved (`moving`); once that is in the changelog
   the agent sends the record, keyed by K, and clears `moving` (agents/identity.py says
   why in that order: a kill -9 can then neither lose the record nor leave A's timers
   armed next to a copy of them at K). A with no state still becomes a pointer, and K
   is told (a record without a state) so that K knows it absorbed A.
2. In K's partition (`receive`): `merge_states` unions the two profiles; the merge id is
   remembered, so a record sent twice is applied once.
3. Later events under A find the pointer and go to K (`alias_of`), at most `MAX_HOPS`
   pointers deep; past that they go to the DLQ (`alias_chain_too_long`). A merge record
   that would go deeper goes back to its own id instead, which keeps its profile.

Bad input never loses anything: A == K is refused (`self`); a merge of K into A after A
was merged into K is refused (`loop`: A is in K's `absorbed`); two opposite merges in
flight at once meet at the pointers and end under the smaller id (the record that comes
back to its own id is put back, `returned`); a merge for an id already merged into
another is refused (`already_merged`).
"""

from __future__ import annotations

from dataclasses import dataclass

import msgspec

from nudgeflow.engine import consent
from nudgeflow.engine.dedupe import merge_seen
from nudgeflow.engine.state import (
    MAX_CART_ITEMS,
    MAX_HISTORY,
    MAX_RECENT_FIRES,
    Sub,
    UserState,
    decode_state,
    encode_state,
    new_state,
)

MAX_HOPS = 8  # pointers an event or a merge record follows before the DLQ
MAX_ABSORBED = 64  # ids a user remembers having absorbed (loop checks, GET /users)
MAX_MERGES = 32  # merge ids remembered (a record applied twice is applied once)


class MergeRecord(msgspec.Struct, kw_only=True, omit_defaults=True):
    """What moves from A's partition to K's: A's whole state (None: A had none)."""

    anonymous: str
    known: str
    merge_id: str
    hops: int = 0
    state: bytes | None = None  # engine.state.encode_state of A's state


_record_encoder = msgspec.msgpack.Encoder()
_record_decoder = msgspec.msgpack.Decoder(MergeRecord)


def encode_record(record: MergeRecord) -> bytes:
    return _record_encoder.encode(record)


def decode_record(data: bytes) -> MergeRecord:
    return _record_decoder.decode(data)


# -- step 1: the request, in A's partition --------------------------------------------


@dataclass(frozen=True, slots=True)
class Move:
    """Write `pointer` (it holds the record), then send `record` to K, then clear it."""

    pointer: UserState
    record: MergeRecord


@dataclass(frozen=True, slots=True)
class Refused:
    """Nothing changes; `reason`: self | loop | already_merged (| noop: done already)."""

    reason: str


def request(state: UserState | None, anonymous: str, known: str, merge_id: str) -> Move | Refused:
    if anonymous == known:
        return Refused("self")
    if state is not None and state.alias_of is not None:
        if state.alias_of != known:
            return Refused("already_merged")
        if state.moving is not None:  # a crash came between the pointer and the send
            return Move(state, decode_record(state.moving))
        return Refused("noop")
    if state is not None and state.absorbed and known in state.absorbed:
        return Refused("loop")
    record = MergeRecord(
        anonymous=anonymous,
        known=known,
        merge_id=merge_id,
        state=encode_state(state) if state is not None else None,
    )
    return Move(pointer_to(anonymous, known, record), record)


def pointer_to(user_id: str, known: str, moving: MergeRecord | None = None) -> UserState:
    """The state an id keeps once merged away: where it went (and the record in flight)."""
    pointer = new_state(user_id)
    pointer.alias_of = known
    pointer.moving = encode_record(moving) if moving is not None else None
    return pointer


def settled(pointer: UserState) -> UserState:
    """The pointer once its record is sent: nothing of the profile is left."""
    return pointer_to(pointer.user_id, pointer.alias_of or "")


# -- step 2: the record, in the partition of the id it is addressed to ------------------


@dataclass(frozen=True, slots=True)
class Merged:
    state: UserState
    returned: bool = False  # the record came back to its own id (a loop): put back


@dataclass(frozen=True, slots=True)
class Forward:
    to: str
    record: MergeRecord
    back: bool = False  # past MAX_HOPS: home to its own id, which keeps its profile


@dataclass(frozen=True, slots=True)
class Dropped:
    """Nothing to do; reason: duplicate | notice (a stateless record at a pointer)."""

    reason: str


Received = Merged | Forward | Dropped


def receive(
    state: UserState | None, user_id: str, record: MergeRecord, now: int, max_hops: int = MAX_HOPS
) -> Received:
    """Apply `record` at `user_id` (its `known`, or an id a pointer led to)."""
    returned = record.anonymous == user_id  # came back around a loop: the profile stays
    if state is not None and state.alias_of is not None:
        target = state.alias_of
        if returned or (target == record.anonymous and user_id < record.anonymous):
            state = None  # (or two opposite merges met: the smaller id keeps both)
        elif record.state is None:
            return Dropped("notice")
        else:
            back = record.hops >= max_hops  # `alias_chain_too_long`: refused, not lost
            hopped = msgspec.structs.replace(record, hops=record.hops + 1)
            return Forward(record.anonymous if back else target, hopped, back)
    base = state if state is not None else new_state(user_id)
    if base.merges and record.merge_id in base.merges:
        return Dropped("duplicate")
    merged = base
    if record.state is not None:
        merged = merge_states(base, decode_state(record.state), now)
    if not returned:
        merged.absorbed = _bounded([*(merged.absorbed or []), record.anonymous], MAX_ABSORBED)
    merged.merges = _bounded([*(merged.merges or []), record.merge_id], MAX_MERGES)
    return Merged(merged, returned)


def _bounded(items: list[str], limit: int) -> list[str]:
    """Each id once (at its latest place), the newest `limit`, oldest first."""
    return list(dict.fromkeys(reversed(items)))[:limit][::-1]


# -- the union ------------------------------------------------------------------------


def merge_states(known: UserState, anonymous: UserState, now: int) -> UserState:
    """K's state with A's folded in; K wins every conflict except consent (an
    unsubscribe on either side wins). Runs keep their deadlines (the shell files K's
    timer index from `next_deadline()`); a run on both sides keeps K's."""
    out = msgspec.structs.replace(known)
    out.profile = {**anonymous.profile, **known.profile}
    out.cart = dict(known.cart)
    for key, item in anonymous.cart.items():
        if key not in out.cart and len(out.cart) < MAX_CART_ITEMS:
            out.cart[key] = msgspec.structs.replace(item)
    if out.cart_value is None and not known.cart:
        out.cart_value = anonymous.cart_value
    out.currency = known.currency or anonymous.currency
    out.history = sorted([*known.history, *anonymous.history], key=lambda h: h.ts)[-MAX_HISTORY:]
    out.armed = {**anonymous.armed, **known.armed}
    out.last_fire = {**anonymous.last_fire}
    for rule, at in known.last_fire.items():
        out.last_fire[rule] = max(at, out.last_fire.get(rule, at))
    out.fire_times = sorted({*known.fire_times, *anonymous.fire_times})
    fires = {f.trigger_id: f for f in [*anonymous.fires, *known.fires]}
    out.fires = sorted(fires.values(), key=lambda f: f.at)[-MAX_RECENT_FIRES:]
    merge_seen(out, anonymous, known)  # an event sent under either id is one event
    out.last_ts = max(known.last_ts, anonymous.last_ts)
    keep = max(len(known.recent), len(anonymous.recent))
    out.recent = sorted([*anonymous.recent, *known.recent], key=lambda d: d.at)[-keep:]
    out.activity = known.activity if known.activity is not None else anonymous.activity
    if anonymous.ended:
        ended = dict(anonymous.ended)
        for key, at in (known.ended or {}).items():
            ended[key] = max(at, ended.get(key, at))
        out.ended = ended
    out.consent = merge_consent(known.consent, anonymous.consent)
    absorbed = [*(known.absorbed or []), *(anonymous.absorbed or [])]
    out.absorbed = _bounded(absorbed, MAX_ABSORBED) if absorbed else None
    merges = [*(known.merges or []), *(anonymous.merges or [])]
    out.merges = _bounded(merges, MAX_MERGES) if merges else None
    return out


def merge_consent(
    known: dict[str, Sub] | None, anonymous: dict[str, Sub] | None
) -> dict[str, Sub] | None:
    """Per category, subscribed only if both sides are; an unsubscribe on either side
    is kept, dated after every mark it must outrank (engine/consent.py reads the latest
    of a category's own mark and the all-categories mark)."""
    if not known or not anonymous:
        return dict(known or anonymous or {}) or None
    out: dict[str, Sub] = {}
    latest = max(m.at for m in [*known.values(), *anonymous.values()])
    for key in {*known, *anonymous}:
        both = consent.subscribed(known, key) and consent.subscribed(anonymous, key)
        if key == consent.ALL:
            both = all(m.subscribed for m in (known.get(key), anonymous.get(key)) if m)
        marks = [m for m in (known.get(key), anonymous.get(key)) if m is not None]
        newest = max(marks, key=lambda m: m.at)
        if both:
            out[key] = Sub(True, newest.at)
        else:
            unsubscribed = [m for m in marks if not m.subscribed]
            at = max(m.at for m in unsubscribed) if key == consent.ALL else latest
            out[key] = Sub(False, at)
    return out
