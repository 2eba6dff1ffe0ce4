"""A worker whose Kafka consumer runs on its event loop (`consumer_on_loop`,
pipeline/loop_consumer.py) decides what the engine decides, commits what it handled, and
stops and starts again cleanly: after a SIGTERM and a restart it reads on from its
commits, handling nothing twice. The fault suite's kill -9 and rebalance runs with the
setting on are in docs/performance.md ("Consumer on the event loop")."""

from __future__ import annotations

import time
import uuid

import msgspec
import pytest

from tests.fixtures.kafka import Record, consume_all, create_topics, produce
from tests.integration.pipeline.test_batch import backlog, one_by_one, per_user

pytestmark = pytest.mark.kafka

ON_LOOP = {"NUDGEFLOW_CONSUMER_ON_LOOP": "true"}


def records(events: list[dict[str, object]]) -> list[Record]:
    return [Record(value=msgspec.json.encode(e), key=str(e["user_id"]).encode()) for e in events]


async def test_the_consumer_on_the_loop_decides_commits_and_restarts(
    start_worker, live_config, evaluate_only, kafka_bootstrap, tmp_path
):
    prefix = f"t{uuid.uuid4().hex[:8]}"
    await create_topics(kafka_bootstrap, [f"{prefix}.events"], partitions=4)
    now = int(time.time() * 1000)
    first = backlog(now)
    await produce(kafka_bootstrap, f"{prefix}.events", records(first))
    decisions, triggers = one_by_one(live_config, first)
    data_dir = tmp_path / "worker"
    worker = start_worker(live_config, prefix=prefix, data_dir=data_dir, env=ON_LOOP)

    assert await per_user(worker, "decisions", "outcome", decisions) == decisions
    assert await per_user(worker, "triggers", "user_id", triggers) == triggers
    assert "consumer: on the worker's event loop" in worker.tail(200_000)

    worker.stop()  # SIGTERM: commits what it handled
    assert worker.proc is not None and worker.proc.returncode == 0, worker.tail()
    again = start_worker(
        live_config, prefix=prefix, app_id=worker.app_id, data_dir=data_dir, env=ON_LOOP
    )
    later = {"event_id": "s7", "user_id": "solo", "type": "ping", "ts": now + 100}
    await produce(kafka_bootstrap, f"{prefix}.events", records([later]))
    _, all_triggers = one_by_one(live_config, [*first, later])

    # The new ping's trigger comes after anything re-read from solo's partition: when it
    # is there, a backlog handled twice would be too.
    got = await per_user(again, "triggers", "user_id", all_triggers)
    assert got == all_triggers
    assert len(got["solo"]) == len(triggers["solo"]) + 1
    assert len(await consume_all(again.broker, f"{prefix}.triggers", timeout=2)) == sum(
        len(v) for v in all_triggers.values()
    )
