"""Seeded changelog records are what the evaluate agent would have written, where it would."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from aiokafka.partitioner import DefaultPartitioner
from rocksdict import Options, Rdict

from nudgeflow.bench import configs, seed
from nudgeflow.config.build import build_engine
from nudgeflow.config.loader import load_config
from nudgeflow.engine.core import Engine
from nudgeflow.engine.dedupe import seen, seen_count
from nudgeflow.engine.state import decode_state
from nudgeflow.events.model import Event
from nudgeflow.tables import timers as timer_index
from nudgeflow.tables import users as user_table
from nudgeflow.tables.single import SinglePartitionTable as _Store

NOW = int(time.time() * 1000)


@pytest.fixture(scope="module")
def engine() -> Engine:
    """The five default rules: a `login` arms `re_engagement` (7 days of inactivity)."""
    return build_engine(load_config(configs.default_config()), secret=b"test")


def test_first_event_writes_the_index_entry_then_the_state_naming_it(engine: Engine) -> None:
    event = Event(user_id="m0000001", type="login", ts=NOW, event_id="e1")

    (index_key, mark), (user_key, value) = seed.first_event_records(engine, event, NOW)

    state = decode_state(value)
    deadline, indexed_user = timer_index.split_key(index_key)
    assert timer_index.is_index_key(index_key) and mark == b"1"
    assert user_key == indexed_user == b"m0000001"
    assert state.indexed == deadline == state.next_deadline() == NOW + 7 * 86_400_000
    assert state.armed["re_engagement"].deadline == deadline
    assert [(d.rule, d.outcome) for d in state.recent] == [("re_engagement", "armed")]
    assert seen(state, "e1") and seen_count(state) == 1


def test_a_state_with_nothing_armed_gets_no_index_entry(engine: Engine) -> None:
    event = Event(user_id="u1", type="page_view", ts=NOW, event_id="e1")

    records = seed.first_event_records(engine, event, NOW)

    assert [key for key, _ in records] == [b"u1"]
    assert decode_state(records[0][1]).indexed is None


def test_an_event_that_sends_a_trigger_at_once_is_refused(tmp_path: Path) -> None:
    config = configs.write_config(tmp_path, "instant", configs.latency_config(None))
    instant = build_engine(load_config(config), secret=b"test")

    with pytest.raises(ValueError, match="trigger"):
        seed.first_event_records(instant, Event(user_id="u", type="ping", ts=NOW), NOW)


def test_records_go_to_the_partition_kafka_gives_the_user_id(engine: Engine) -> None:
    partitioner = DefaultPartitioner()
    events = list(seed.first_events(200, NOW))

    records = list(seed.user_records(engine, events, NOW, partitions=4))

    assert len(records) == 400  # index entry + state per user
    for record in records:
        user_key = timer_index.split_key(record.key)[1] if record.key[:1] == b"\0" else record.key
        assert record.partition == partitioner(user_key, [0, 1, 2, 3], [0, 1, 2, 3])
    assert {r.partition for r in records} == {0, 1, 2, 3}


def test_seeded_timers_are_found_due_by_the_firing_path(engine: Engine, tmp_path: Path) -> None:
    """Applied to a DB the way a restore does, the index finds each user at its deadline."""
    events = list(seed.first_events(50, NOW, prefix="d"))
    db = Rdict(str(tmp_path / "db"), Options(raw_mode=True))
    try:
        for record in seed.user_records(engine, events, NOW, partitions=1):
            db[record.key] = record.value
        table = _Store(db)
        deadline = NOW + 7 * 86_400_000

        assert timer_index.due(table, 0, deadline - 1, 1000) == []  # type: ignore[arg-type]
        due = timer_index.due(table, 0, deadline, 1000)  # type: ignore[arg-type]
        assert due == [(deadline, e.user_id.encode()) for e in events]
        state = user_table.load(table, b"d0000049")  # type: ignore[arg-type]
        assert state is not None and state.indexed == deadline
    finally:
        db.close()


def test_changelog_topic_is_fausts_name_for_the_users_table() -> None:
    assert seed.changelog_topic("bench-1-state10") == "bench-1-state10-users-changelog"
