"""Erasure (issue 19.3): the records that carry it and the marker that drops retries.

`DELETE /users/<id>` and `nudgeflow forget <id>` put one *erase request* on
`<prefix>.events.by-user` (key: the user id, header `nudgeflow-erase`), so the evaluate
agent applies it in the user's partition order with the user's events and ticks: an
event before it is applied and then erased, one after it starts a new, empty user; no
event can land between "state removed" and "timer removed" (agents/erase.py).

The evaluate agent then removes the state and the user's timer-index entry (tombstones in
the users changelog), writes one audit record without personal data to
`<prefix>.erasures` (`Erasure`: a keyed hash of the id, never the id, the profile or
the events), and sends a *forget* record on `<prefix>.triggers` (same key, header
`nudgeflow-forget`) behind every trigger it ever sent that user. The deliver agent, which
owns the timeline and the delivery retries, handles it in that order: it tombstones the
user's timeline row and files a *forgotten* marker in its `delivered` table (key
`forgotten|<sha256 of the id>`, value the time it was filed). A retry or parked delivery
of that user whose first attempt is not later than the marker is dropped at its next
attempt (`deliveries_total{outcome="forgotten"}`), on whichever worker owns the partition
then (the marker is in a changelog-backed table partitioned like the retries). Markers
expire with the delivery marks (the retry horizon): no retry outlives that.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Mapping
from typing import Any

import msgspec

from nudgeflow.tables import delivered
from nudgeflow.types.tables import TableView

ERASE_HEADER = "nudgeflow-erase"
FORGET_HEADER = "nudgeflow-forget"
_MARKER = b"forgotten|"


class Erasure(msgspec.Struct, kw_only=True):
    """The audit record of one erasure: nothing that identifies the person without the
    secret (`user_hash` is HMAC-SHA256 of the id under the engine secret, so an operator
    who holds it can answer "was X erased?", and no one else can)."""

    user_hash: str
    requested_at: str  # ISO 8601 UTC, when the API took the request
    erased_at: str  # when the evaluate agent applied it
    partition: int
    timers_removed: int


def user_hash(secret: bytes, user_id: bytes) -> str:
    return hmac.new(secret, b"nudgeflow erasure|" + user_id, hashlib.sha256).hexdigest()


def encode_request(requested_at_ms: int) -> bytes:
    return msgspec.json.encode({"requested_at": requested_at_ms})


def decode_request(value: bytes | None) -> int | None:
    """The request's time, or None when the value is not one (it is still applied:
    the header and the key say what to erase)."""
    try:
        raw = msgspec.json.decode(value or b"{}")
    except msgspec.DecodeError:
        return None
    at = raw.get("requested_at") if isinstance(raw, dict) else None
    return at if isinstance(at, int) and not isinstance(at, bool) else None


def has_header(headers: Any, name: str) -> bool:
    """Whether a record carries header `name` (Faust gives a list of pairs or a mapping)."""
    if not headers:
        return False
    if isinstance(headers, Mapping):
        return name in headers
    pairs: Iterable[tuple[str, Any]] = headers
    return any(k == name for k, _ in pairs)


def marker_key(user_key: bytes) -> bytes:
    return _MARKER + hashlib.sha256(user_key).hexdigest().encode()


def forget(table: TableView, user_key: bytes, now_ms: int, ttl_ms: int) -> None:
    """File (or move forward) the user's forgotten marker."""
    delivered.mark(table, marker_key(user_key), str(now_ms).encode(), now_ms, ttl_ms)


def forgotten_since(table: TableView, user_key: bytes) -> int | None:
    """When the user was last forgotten here (ms), or None."""
    value = table.get(marker_key(user_key))
    try:
        return int(value) if value else None
    except ValueError:
        return None
