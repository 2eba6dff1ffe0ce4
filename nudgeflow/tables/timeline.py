"""The per-user audit timeline: user id -> the last decisions and delivery attempts.

`GET /users/<id>` and `nudgeflow explain` answer "why did (or didn't) it fire"
from here without scanning `<prefix>.decisions`. Bounded (the last
MAX_DECISIONS / MAX_DELIVERIES of each), msgpack-encoded, changelog-backed,
keyed and partitioned like the user state table, so the evaluate agent and the
deliver agent (whose topics are keyed by user id) write the owner's partition.
Writes must happen inside a stream iteration (Faust's current-event context).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import cast

import faust
import msgspec

from nudgeflow.delivery.records import DeliveryAttempt
from nudgeflow.engine.actions import Decision
from nudgeflow.tables.schema import RAW_TABLE

NAME = "timeline"
MAX_DECISIONS = 20  # each write re-encodes the whole timeline: keep it small
MAX_DELIVERIES = 20


class Timeline(msgspec.Struct, kw_only=True, omit_defaults=True):
    decisions: list[Decision] = msgspec.field(default_factory=list, name="d")
    deliveries: list[DeliveryAttempt] = msgspec.field(default_factory=list, name="a")


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(Timeline)


def encode(timeline: Timeline) -> bytes:
    return _encoder.encode(timeline)


def decode(data: bytes) -> Timeline:
    return _decoder.decode(data)


def with_decisions(
    timeline: Timeline, decisions: Iterable[Decision], limit: int = MAX_DECISIONS
) -> Timeline:
    """The timeline with `decisions` appended, keeping the newest `limit`."""
    merged = [*timeline.decisions, *decisions][-limit:]
    return Timeline(decisions=merged, deliveries=timeline.deliveries)


def with_delivery(
    timeline: Timeline, attempt: DeliveryAttempt, limit: int = MAX_DELIVERIES
) -> Timeline:
    merged = [*timeline.deliveries, attempt][-limit:]
    return Timeline(decisions=timeline.decisions, deliveries=merged)


def define(app: faust.App, partitions: int) -> faust.Table:
    table = app.Table(
        NAME,
        default=None,
        **RAW_TABLE,
        partitions=partitions,
        help="Per-user audit timeline (last decisions and delivery attempts)",
    )
    return cast(faust.Table, table)


def load(table: faust.Table, user_key: bytes) -> Timeline:
    raw = table.get(user_key)
    return decode(raw) if raw else Timeline()


def record_decisions(table: faust.Table, user_key: bytes, decisions: list[Decision]) -> None:
    if decisions:
        table[user_key] = encode(with_decisions(load(table, user_key), decisions))


def record_delivery(table: faust.Table, user_key: bytes, attempt: DeliveryAttempt) -> None:
    table[user_key] = encode(with_delivery(load(table, user_key), attempt))
