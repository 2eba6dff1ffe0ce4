"""A backlog is handled in batches (agents/batch.py, issue 23.1), and a batch holding
several events of one user decides exactly what the engine decides one record at a time:
the same decisions in the same order per user, the same triggers, a repeated event id
dropped, nothing for another user's events."""

from __future__ import annotations

import time
import uuid
from collections import defaultdict
from pathlib import Path

import aiohttp
import msgspec
import pytest

from nudgeflow.config.build import build_engine
from nudgeflow.config.loader import load_config
from nudgeflow.engine.actions import Decision, Trigger
from nudgeflow.engine.state import UserState
from nudgeflow.events.model import Event
from tests.fixtures.kafka import Record, consume_all, create_topics, produce

pytestmark = pytest.mark.kafka

Outcomes = dict[str, list[tuple[str, str]]]


def backlog(now: int) -> list[dict[str, object]]:
    """One user's pings, views and a repeated id among four other users' pings."""
    solo = [
        ("ping", "s1"),
        ("product_view", "s2"),
        ("ping", "s3"),
        ("ping", "s1"),  # repeated id: dropped
        ("ping", "s4"),
        ("purchase", "s5"),
        ("ping", "s6"),
    ]
    out: list[dict[str, object]] = []
    for i, (kind, event_id) in enumerate(solo):
        out.append({"event_id": event_id, "user_id": "solo", "type": kind, "ts": now + i})
        other = f"o{i % 4}"
        out.append({"event_id": f"{other}-{i}", "user_id": other, "type": "ping", "ts": now + i})
    return out


def one_by_one(config: Path, events: list[dict[str, object]]) -> tuple[Outcomes, Outcomes]:
    """Per user: (rule, outcome) of each audited decision, and (rule, user) of each trigger."""
    engine = build_engine(load_config(config), secret=b"any")
    states: dict[str, UserState] = {}
    decisions: Outcomes = defaultdict(list)
    triggers: Outcomes = defaultdict(list)
    for raw in events:
        event = msgspec.convert(raw, Event)
        step = engine.apply(states.get(event.user_id), event, event.ts)
        states[event.user_id] = step.state
        for action in step.actions:
            if isinstance(action, Decision) and action.outcome != "rearmed":
                decisions[action.user_id].append((action.rule, action.outcome))
            elif isinstance(action, Trigger):
                triggers[action.user_id].append((action.rule, action.user_id))
    return decisions, triggers


async def per_user(worker, topic: str, second: str, expected: Outcomes) -> Outcomes:
    """Per user: (rule, `second`) of each record on `<prefix>.<topic>`, in order."""
    count = sum(len(v) for v in expected.values())
    records = await consume_all(
        worker.broker, f"{worker.prefix}.{topic}", min_count=count, timeout=60
    )
    out: Outcomes = defaultdict(list)
    for record in records:
        value = msgspec.json.decode(record.value)
        out[value["user_id"]].append((value["rule"], value[second]))
    return out


async def test_a_backlog_in_batches_decides_what_one_record_at_a_time_decides(
    start_worker, live_config, evaluate_only, kafka_bootstrap
):
    prefix = f"t{uuid.uuid4().hex[:8]}"
    await create_topics(kafka_bootstrap, [f"{prefix}.events"], partitions=4)
    events = backlog(int(time.time() * 1000))
    await produce(  # all waiting before the worker starts: its agent takes them in batches
        kafka_bootstrap,
        f"{prefix}.events",
        [Record(value=msgspec.json.encode(e), key=str(e["user_id"]).encode()) for e in events],
    )
    expected_decisions, expected_triggers = one_by_one(live_config, events)
    worker = start_worker(live_config, prefix=prefix)

    assert await per_user(worker, "decisions", "outcome", expected_decisions) == expected_decisions
    assert await per_user(worker, "triggers", "user_id", expected_triggers) == expected_triggers
    assert len(expected_triggers["solo"]) == 4  # s1, s3, s4, s6; not s1 again

    async with aiohttp.ClientSession() as session:
        names = "&".join(
            f"name[]=nudgeflow_evaluate_{n}_total" for n in ("batches", "batched_records")
        )
        async with session.get(f"{worker.url}/metrics?{names}") as resp:
            text = await resp.text()
    values = {
        line.split()[0]: float(line.split()[1])
        for line in text.splitlines()
        if line.startswith("nudgeflow_evaluate_batch")
    }
    # several records per batch on average: some batch held more than one
    assert (
        values["nudgeflow_evaluate_batched_records_total"]
        > values["nudgeflow_evaluate_batches_total"]
    )
