"""A jump in a partition's fetch position is read again, not committed over (pipeline/consumer.py).

The worker (jump_worker.py) moves its aiokafka fetch position from 10 to 20 once,
as a batch fetched from a stale position does after a restart. Faust's own
consumer takes the jump for a compaction gap and never hands out 10..19;
ours seeks back and hands out every record.

Its fetch settings are checked on a consumer started against the real broker.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nudgeflow.config.settings import WorkerSettings
from nudgeflow.pipeline import consumer
from nudgeflow.pipeline.app import create_app
from tests.fixtures.kafka import create_topics, produce, unique_name
from tests.fixtures.workers import ARTIFACTS, stop_group

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(180)]

JUMP_AT, JUMP_TO, TOTAL = 9, 20, 40


def _offsets(path: Path) -> list[int]:
    return [int(line) for line in path.read_text().split()] if path.exists() else []


async def _wait_for(path: Path, offset: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if offset in _offsets(path):
            return True
        await asyncio.sleep(0.2)
    return False


async def _run(kafka_bootstrap: str, tmp_path: Path, *, gapless: bool) -> list[int]:
    name = unique_name("jump")
    await create_topics(kafka_bootstrap, [name], partitions=1)
    await produce(kafka_bootstrap, name, [b"%d" % i for i in range(JUMP_AT + 1)])
    out = tmp_path / "offsets.txt"
    spec = tmp_path / "spec.json"
    spec.write_text(
        json.dumps(
            {
                "broker": kafka_bootstrap,
                "topic": name,
                "app_id": name,
                "data_dir": str(tmp_path / "data"),
                "out": str(out),
                "jump_at": JUMP_AT,
                "jump_to": JUMP_TO,
                "gapless": gapless,
            }
        )
    )
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with (ARTIFACTS / f"jump-worker-{'gapless' if gapless else 'faust'}.log").open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.integration.pipeline.jump_worker", str(spec)],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            assert await _wait_for(out, JUMP_AT, 90), "the worker never read the first records"
            await produce(kafka_bootstrap, name, [b"%d" % i for i in range(JUMP_AT + 1, TOTAL)])
            assert await _wait_for(out, TOTAL - 1, 60), "the worker never read the last record"
            await asyncio.sleep(2.0)  # anything read again arrives now
        finally:
            stop_group(proc)
    return _offsets(out)


async def test_records_past_a_jump_are_read_again(kafka_bootstrap: str, tmp_path: Path) -> None:
    seen = await _run(kafka_bootstrap, tmp_path, gapless=True)
    assert set(range(TOTAL)) <= set(seen), sorted(set(range(TOTAL)) - set(seen))
    # Read again from the last record read: only that one twice, no other repeat.
    assert sorted(seen) == sorted([*range(TOTAL), JUMP_AT]), seen


async def test_faust_alone_skips_them(kafka_bootstrap: str, tmp_path: Path) -> None:
    """The upstream behaviour the consumer exists for: if this starts failing, Faust
    handles jumps itself and pipeline/consumer.py can go."""
    seen = await _run(kafka_bootstrap, tmp_path, gapless=False)
    assert set(range(JUMP_AT + 1, JUMP_TO)).isdisjoint(seen), seen
    assert set(range(JUMP_TO, TOTAL)) <= set(seen), seen


async def test_fetches_of_idle_partitions_are_held_briefly_not_faust_s_1_5_s(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """aiokafka leaves a busy partition out of the next fetch once its records wait 100 ms;
    while the broker holds that fetch of idle partitions, the busy one's records wait."""
    app = create_app(WorkerSettings(broker=kafka_bootstrap, app_id="t", data_dir=tmp_path))
    thread = app.consumer._thread  # type: ignore[attr-defined]
    await thread.on_start()  # creates and starts the aiokafka consumer, as the thread does
    try:
        fetcher = thread._consumer._fetcher
        assert fetcher._fetch_max_wait_ms == consumer.FETCH_MAX_WAIT_MS == 50
        assert thread._consumer._group_id == "t"  # otherwise still Faust's worker consumer
    finally:
        await thread._consumer.stop()
