"""Ingestion: what the evaluate agent does with a raw record from `<prefix>.events`.

Upstream producers may key records by user id or not at all. A record that
is valid, keyed by its user id, and sits in the partition the default
partitioner gives that key is applied in place (the fast path: one hop).
Anything else valid is re-keyed onto `<prefix>.events.by-user`; anything
invalid goes to `<prefix>.events.dlq` with the original bytes and the reason.
"""

from __future__ import annotations

from dataclasses import dataclass

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


def dlq_headers(error: EventError, partition: int, offset: int) -> list[tuple[str, bytes]]:
    return [
        ("nudgeflow-reason", error.reason.encode()),
        ("nudgeflow-error", str(error).encode()[:1000]),
        ("nudgeflow-field", (error.field or "").encode()),
        ("nudgeflow-source", f"events/{partition}/{offset}".encode()),
    ]
