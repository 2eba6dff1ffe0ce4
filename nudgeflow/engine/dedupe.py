"""The per-user event dedupe window (issue 19.6): `dedupe: {ids, within}`.

A producer that re-sends a batch must not double-count, so each user's state remembers
the ids of its recent events: at most `ids`, none older than `within` before the user's
newest event time (default 1,000 ids / 7 days). Kept in `UserState.seen_keys` /
`seen_ring` as byte strings (20 bytes an id, decoded without a Python object per id):

* `seen_keys`: the 8-byte keys (blake2b of the id, native-endian uint64) in sorted order,
  searched by `bisect` over a uint64 view, in C;
* `seen_ring`: key + 4-byte event time (s) per arrival, oldest first; a bytearray appends
  at its end and drops from its start without copying.

So an event's dedupe work is flat in `ids` (docs/performance.md, "Dedupe window"). States
written before issue 19 hold the ids as lists (`seen_ids` / `seen_ts`): they count as
seen and are folded into the keys at the user's next event. Keys are native-endian: a
state moved between machines of different byte order would miss its old ids (dedupe
only; no event is lost).
"""

from __future__ import annotations

import hashlib
import sys
from bisect import bisect_left
from dataclasses import dataclass

from nudgeflow.engine.state import UserState

DEDUPE_IDS = 1_000  # recent event ids kept per user (the `dedupe:` default) ...
DEDUPE_WITHIN_MS = 7 * 86_400_000  # ... and for at most 7 days of event time


@dataclass(frozen=True, slots=True)
class Dedupe:
    """The `dedupe:` setting: at most `ids` event ids per user, none older than
    `within_ms` before the user's newest event time."""

    ids: int = DEDUPE_IDS
    within_ms: int = DEDUPE_WITHIN_MS


_KEY = 8
_SECS = 4
_RING = _KEY + _SECS  # one arrival: its key, its event time (s, big-endian)
_ORDER = sys.byteorder  # keys are stored as native uint64 so that bisect can read them


def id_key(event_id: str) -> int:
    """A stable 64-bit key of an event id (two ids share one with odds ~N^2 / 2^64)."""
    return int.from_bytes(hashlib.blake2b(event_id.encode(), digest_size=_KEY).digest())


def seen(state: UserState, event_id: str | None) -> bool:
    return event_id is not None and seen_key(state, id_key(event_id), event_id)


def seen_key(state: UserState, key: int, event_id: str) -> bool:
    return place(state, key, event_id) is None


def place(state: UserState, key: int, event_id: str) -> int | None:
    """None if this id was applied, else where its key goes (for remember_key). A binary
    search of the sorted keys, in C (bisect over a uint64 view): no Python object per
    id, and decoding a state is one copy per byte string."""
    if state.seen_ids and event_id in state.seen_ids:
        return None
    keys = state.seen_keys
    if keys is None:
        return 0
    at, found = _find(keys, key)
    return None if found else at


def _find(keys: bytearray, key: int) -> tuple[int, bool]:
    """Where `key` is, or would go, in the sorted keys; and whether it is there. (The view
    is released when this returns: CPython frees it with its last reference.)"""
    view = memoryview(keys).cast("Q")
    at = bisect_left(view, key)
    return at, at < len(view) and view[at] == key


def remember_id(
    state: UserState, event_id: str | None, ts: int, dedupe: Dedupe | None = None
) -> None:
    if event_id is not None:
        remember_key(state, id_key(event_id), ts, dedupe or _DEFAULT_DEDUPE)


def remember_key(
    state: UserState, key: int, ts: int, dedupe: Dedupe, at: int | None = None
) -> None:
    """Keep the last `dedupe.ids` ids (`key` not yet seen: seen_key() was False), none
    older than `dedupe.within_ms` before the newest event time (state.last_ts); the
    oldest arrivals leave first. Python work is O(1) per call plus one step per id that
    leaves: the ring appends at its end and drops from its start (a bytearray does both
    without copying), the sorted keys move their tail (a memmove). `at`: place()'s
    answer for this key, if the caller has it (saves a search)."""
    if state.seen_ids:
        _fold_lists(state)
        at = None
    keys, ring = state.seen_keys, state.seen_ring
    if keys is None or ring is None:
        keys = state.seen_keys = bytearray()
        ring = state.seen_ring = bytearray()
    packed = key.to_bytes(_KEY, _ORDER)
    if at is None:
        at = _find(keys, key)[0]
    keys[at * _KEY : at * _KEY] = packed
    ring += packed + _secs(ts)
    floor = (state.last_ts - dedupe.within_ms) // 1000
    if len(ring) > dedupe.ids * _RING or int.from_bytes(ring[_KEY:_RING]) < floor:
        _evict(keys, ring, dedupe.ids, floor)


def _evict(keys: bytearray, ring: bytearray, ids: int, floor: int) -> None:
    """Drop the oldest arrivals beyond `ids` or older than `floor` (s)."""
    n = len(ring) // _RING
    drop = n - ids if n > ids else 0
    while drop < n and int.from_bytes(ring[drop * _RING + _KEY : (drop + 1) * _RING]) < floor:
        drop += 1
    for i in range(drop):  # usually the one the new id pushed out
        at = _find(keys, int.from_bytes(ring[i * _RING : i * _RING + _KEY], _ORDER))[0] * _KEY
        del keys[at : at + _KEY]
    del ring[: drop * _RING]


def _secs(ts: int) -> bytes:
    return min(max(ts // 1000, 0), 0xFFFFFFFF).to_bytes(_SECS, "big")


def _fold_lists(state: UserState) -> None:
    """A state from before issue 19: its id list becomes keys (same arrival order)."""
    ids, times = state.seen_ids, state.seen_ts
    state.seen_ids, state.seen_ts = [], []
    keep_all = Dedupe(ids=len(ids) + 1, within_ms=1 << 62)
    for event_id, ts in zip(ids, times, strict=False):
        key = id_key(event_id)
        if state.seen_keys is None or not _find(state.seen_keys, key)[1]:
            remember_key(state, key, ts, keep_all)


def merge_seen(out: UserState, first: UserState, second: UserState) -> None:
    """Both states' dedupe ids into `out`, `first`'s arrivals before `second`'s (an
    identity merge: an event sent under either id is one event). Bounded again by the
    `dedupe:` setting at the next remember_key; rare, so a plain loop."""
    out.seen_ids = [*first.seen_ids, *second.seen_ids]  # (states from before issue 19)
    out.seen_ts = [*first.seen_ts, *second.seen_ts]
    ring = bytearray(first.seen_ring or b"") + (second.seen_ring or b"")
    keys = sorted({int.from_bytes(ring[i : i + _KEY], _ORDER) for i in range(0, len(ring), _RING)})
    out.seen_ring = ring or None
    out.seen_keys = bytearray(b"".join(k.to_bytes(_KEY, _ORDER) for k in keys)) or None


def seen_count(state: UserState) -> int:
    return len(state.seen_ring or ()) // _RING + len(state.seen_ids)


_DEFAULT_DEDUPE = Dedupe()
