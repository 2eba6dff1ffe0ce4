"""The per-user audit timeline: the last decisions and delivery attempts.

`GET /users/<id>` and `nudgeflow explain` answer "why did (or didn't) it fire"
from here without scanning the audit topics. Two halves, written by the agent
that makes them:
* decisions: `UserState.recent`, written with the state the evaluate agent
  saves anyway (`remember`), so an event costs one table write, not two;
* delivery attempts: this table (user id -> msgpack `Timeline`), written by the
  deliver agent, which does not own the state. Keyed and partitioned like the
  state, changelog-backed; writes happen inside a stream iteration.
Both are bounded (the newest MAX_DECISIONS / MAX_DELIVERIES). `merged` joins
them for a view; decisions a table row still holds (written before `recent`
existed) come first.
"""

from __future__ import annotations

from collections.abc import Iterable

import faust
import msgspec

from nudgeflow.delivery.records import DeliveryAttempt
from nudgeflow.engine.actions import Decision
from nudgeflow.engine.state import UserState
from nudgeflow.tables import options
from nudgeflow.tables.schema import raw_table
from nudgeflow.types.tables import TableView

NAME = "timeline"
MAX_DECISIONS = 20  # each event re-encodes them with the state: keep it small
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
    kept = [*timeline.decisions, *decisions][-limit:]
    return Timeline(decisions=kept, deliveries=timeline.deliveries)


def with_delivery(
    timeline: Timeline, attempt: DeliveryAttempt, limit: int = MAX_DELIVERIES
) -> Timeline:
    kept = [*timeline.deliveries, attempt][-limit:]
    return Timeline(decisions=timeline.decisions, deliveries=kept)


def remember(state: UserState, decisions: list[Decision], limit: int = MAX_DECISIONS) -> None:
    """Append `decisions` to the state's own timeline, keeping the newest `limit`."""
    if decisions:
        state.recent = [*state.recent, *decisions][-limit:]


def merged(timeline: Timeline, state: UserState | None) -> Timeline:
    """The whole timeline of a user: table row plus the state's recent decisions."""
    if state is None or not state.recent:
        return timeline
    return with_decisions(timeline, state.recent)


def define(app: faust.App, partitions: int) -> faust.Table:
    return raw_table(
        app,
        NAME,
        partitions,
        options.small(),
        "Per-user audit timeline (last decisions and delivery attempts)",
    )


def load(table: TableView, user_key: bytes) -> Timeline:
    raw = table.get(user_key)
    return decode(raw) if raw else Timeline()


def record_delivery(table: TableView, user_key: bytes, attempt: DeliveryAttempt) -> None:
    table[user_key] = encode(with_delivery(load(table, user_key), attempt))
