"""The latency scenario's capacity figure is a real worker draining pre-produced pings:
every ping answered by exactly one trigger record of the instant rule, for its user."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nudgeflow.bench import latency
from nudgeflow.bench.configs import INSTANT_RULE
from nudgeflow.bench.session import BenchSession
from tests.fixtures.kafka import consume_all

pytestmark = pytest.mark.kafka

PINGS = 300


async def test_capacity_is_a_worker_draining_every_ping(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    session = BenchSession(kafka_bootstrap, workdir=tmp_path)
    try:
        figures = await latency.capacity(session, pings=PINGS)
    finally:
        session.close()

    assert set(figures) == {"capacity_events_per_s", "capacity_events_per_cpu_s"}
    assert all(isinstance(v, float) and v > 0 for v in figures.values())
    triggers = await consume_all(
        kafka_bootstrap, f"{session.prefix('capacity')}.triggers", min_count=PINGS
    )
    users = sorted(t.key for t in triggers if t.key is not None)
    assert users == sorted(f"cap-{n}".encode() for n in range(PINGS))  # once each
    for t in triggers:
        assert t.value is not None
        trigger = json.loads(t.value)
        assert trigger["rule"] == INSTANT_RULE and trigger["user_id"] == t.key.decode()
