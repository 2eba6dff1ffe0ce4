"""The latency baselines answer every ping once, as a worker's trigger would be read.

Against the real broker: a bare Faust agent (a real Faust worker subprocess) and the
raw aiokafka loop each get paced pings through the bench's own `paced_run`, and must
answer each ping exactly once, keyed by the ping's user, on the ping's partition,
with `{"trigger_id": <user>}`, so the latency scenario's figures for them are real.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nudgeflow.bench import echoes
from nudgeflow.bench.kafka_io import provision
from nudgeflow.bench.latency import paced_run
from tests.fixtures.kafka import consume_all, unique_name

pytestmark = pytest.mark.kafka

PARTITIONS = 4
RATE, SECONDS = 40, 0.5  # 20 pings


@pytest.mark.parametrize("name", sorted(echoes.ECHOES))
async def test_each_ping_is_answered_once_on_its_partition(
    name: str, kafka_bootstrap: str, tmp_path: Path
) -> None:
    prefix = unique_name(f"echo-{name.replace('_', '-')}")
    await provision(kafka_bootstrap, prefix, PARTITIONS)
    async with echoes.ECHOES[name](kafka_bootstrap, prefix, PARTITIONS, tmp_path):
        timings = await paced_run(kafka_bootstrap, prefix, PARTITIONS, "p", RATE, SECONDS)

    users = {f"p-{n}" for n in range(int(RATE * SECONDS))}
    assert set(timings) == users  # Pings.timings: trigger_id -> (sent, answered)
    assert all(t.trigger_ms >= t.event_ms for t in timings.values())

    pings = await consume_all(kafka_bootstrap, f"{prefix}.events", min_count=len(users))
    answers = await consume_all(kafka_bootstrap, f"{prefix}.triggers", min_count=len(users))
    ping_partition = {p.key: p.partition for p in pings}
    assert sorted(a.key for a in answers) == sorted(ping_partition)  # once each
    for a in answers:
        assert a.partition == ping_partition[a.key]
        assert a.key is not None and a.value is not None
        assert json.loads(a.value) == {"trigger_id": a.key.decode()}
