"""Ingestion: what the evaluate agent does with a raw record from `<prefix>.events`.

Upstream producers may key records by user id or not at all. A record that
is valid, keyed by its user id, and sits in the partition the default
partitioner gives that key is applied in place (the fast path: one hop).
Anything else valid is re-keyed onto `<prefix>.events.by-user`; anything
invalid goes to `<prefix>.events.dlq` with the original bytes and the reason.

A record on the internal `events.by-user` topic is not trusted either (anyone who
can write to the cluster can write there): `rekeyed` validates it again and refuses
it (`key_mismatch`) unless its key is its user id, since the state it changes is the
key's (issue 21 item 7).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from aiokafka.partitioner import murmur2

from nudgeflow.events.model import Event
from nudgeflow.events.parse import EventError, EventLimits, parse_event


@dataclass(frozen=True, slots=True)
class Apply:
    event: Event
    user_key: bytes


@dataclass(frozen=True, slots=True)
class Reroute:
    event: Event
    user_key: bytes


@dataclass(frozen=True, slots=True)
class Reject:
    error: EventError


Route = Apply | Reroute | Reject


def partition_for(key: bytes, partitions: int) -> int:
    """Kafka's default partitioner for keyed records (murmur2), as Java and aiokafka use."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


def route(
    key: bytes | None,
    value: bytes | None,
    partition: int,
    partitions: int,
    *,
    now_ms: int,
    limits: EventLimits,
) -> Route:
    if value is None:
        return Reject(EventError("missing_value", "record has no value (tombstone)"))
    try:
        event = parse_event(value, now_ms=now_ms, limits=limits)
    except EventError as exc:
        return Reject(exc)
    user_key = event.user_id.encode()
    if key == user_key and partition_for(user_key, partitions) == partition:
        return Apply(event, user_key)
    return Reroute(event, user_key)


def rekeyed(key: bytes | None, value: bytes | None, *, limits: EventLimits) -> Apply | Reject:
    """A record from `events.by-user`: Apply only a valid event keyed by its own user id.

    No age check (`now_ms=None`): the event was checked when it arrived, and a record
    may wait in the topic. Twice the size limit: re-encoding may add a few bytes.
    """
    if value is None:
        return Reject(EventError("missing_value", "record has no value (tombstone)"))
    try:
        event = parse_event(
            value, now_ms=None, limits=replace(limits, max_bytes=2 * limits.max_bytes)
        )
    except EventError as exc:
        return Reject(exc)
    user_key = event.user_id.encode()
    if key != user_key:
        shown = key.decode("utf-8", "replace")[:100] if key is not None else None
        return Reject(
            EventError(
                "key_mismatch",
                f"record key {shown!r} is not its user_id {event.user_id!r}",
                "user_id",
            )
        )
    return Apply(event, user_key)


def dlq_headers(error: EventError, partition: int, offset: int) -> list[tuple[str, bytes]]:
    return [
        ("nudgeflow-reason", error.reason.encode()),
        ("nudgeflow-error", str(error).encode()[:1000]),
        ("nudgeflow-field", (error.field or "").encode()),
        ("nudgeflow-source", f"events/{partition}/{offset}".encode()),
    ]
