"""Load N users' state into a worker without the worker applying N events.

Applying one event per user runs at the worker's ~800 events/s: 20 minutes for the
1,000,000 users the memory, recovery and timer scenarios ask for. Instead the bench
writes, with a raw producer, the changelog records the worker's users table would hold
after those events, into `<app_id>-users-changelog`; a worker started afterwards
restores the table from it, as after a crash or a rebalance.

The records are the worker's own: each state is built by the real engine
(`Engine.apply` of the user's first event), with its audited decisions remembered and
its timer index entry written first, exactly as the evaluate agent's `publish` and
`store` write a new user (agents/evaluate.py; index layout: tables/timers.py). Each
user's records go to the partition of its events (`ingest.partition_for`: murmur2 of
the user id), which is the partition whose table holds it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import NamedTuple

from nudgeflow.agents.router import partition_for
from nudgeflow.bench.kafka_io import create_topics, produce_batched
from nudgeflow.engine.actions import Decision, Trigger
from nudgeflow.engine.core import Engine
from nudgeflow.engine.state import encode_state
from nudgeflow.events.model import Event
from nudgeflow.tables import timeline
from nudgeflow.tables import timers as timer_index

USERS_TABLE = "users"


class Record(NamedTuple):
    """One changelog record, and the partition it belongs in."""

    partition: int
    key: bytes
    value: bytes


def changelog_topic(app_id: str, table: str = USERS_TABLE) -> str:
    """Faust's name for a table's changelog topic: `<app id>-<table>-changelog`."""
    return f"{app_id}-{table}-changelog"


def first_event_records(engine: Engine, event: Event, now_ms: int) -> list[tuple[bytes, bytes]]:
    """The users-table writes, in order, of the evaluate agent applying a user's first event.

    Refuses events that send a trigger: the seeded state would say "fired" for a
    trigger record that no one produced.
    """
    step = engine.apply(None, event, now_ms)
    if any(isinstance(a, Trigger) for a in step.actions):
        raise ValueError(f"{event.type!r} sends a trigger at once; seed with an arming event")
    state = step.state
    audited = [a for a in step.actions if isinstance(a, Decision) and a.outcome != "rearmed"]
    timeline.remember(state, audited)
    user_key = event.user_id.encode()
    deadline = state.next_deadline()
    records: list[tuple[bytes, bytes]] = []
    if deadline is not None:  # the index entry first, then the state that names it
        records.append((timer_index.index_key(deadline, user_key), b"1"))
        state.indexed = deadline
    records.append((user_key, encode_state(state)))
    return records


def user_records(
    engine: Engine, events: Iterable[Event], now_ms: int, partitions: int
) -> Iterator[Record]:
    """Each user's records in the partition of its user id (first event per user only)."""
    for event in events:
        user_key = event.user_id.encode()
        partition = partition_for(user_key, partitions)
        for key, value in first_event_records(engine, event, now_ms):
            yield Record(partition, key, value)


def first_events(
    users: int, ts_ms: int, *, type_: str = "login", prefix: str = "m"
) -> Iterator[Event]:
    """One event per user; ids as `workloads.small_events` (m0000000, m0000001, ...)."""
    for n in range(users):
        yield Event(user_id=f"{prefix}{n:07d}", type=type_, ts=ts_ms, event_id=f"e{n}")


async def seed_users(
    bootstrap: str,
    app_id: str,
    engine: Engine,
    events: Iterable[Event],
    now_ms: int,
    partitions: int,
) -> int:
    """Create the users changelog (compacted, as the worker would) and fill it.

    Run before the worker's first start; returns the number of records written.
    """
    topic = changelog_topic(app_id)
    await create_topics(bootstrap, [topic], partitions, {"cleanup.policy": "compact"})
    records = user_records(engine, events, now_ms, partitions)
    return await produce_batched(bootstrap, topic, records)
