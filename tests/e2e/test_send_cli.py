"""`nudgeflow send FILE.jsonl` against a live worker: good lines are applied, bad ones DLQ'd."""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

import msgspec
import pytest

from tests.fixtures.kafka import consume_all
from tests.fixtures.metrics import wait_for_metric

pytestmark = pytest.mark.kafka

LIVE = Path(__file__).parents[1] / "integration" / "pipeline" / "configs" / "live.yaml"


async def test_send_produces_a_jsonl_file_keyed_by_user(start_worker, tmp_path):
    worker = start_worker(LIVE, env={"NUDGEFLOW_ROLES": "evaluate"})
    now = int(time.time() * 1000)
    lines = [
        msgspec.json.encode(
            {"event_id": f"f{i}", "user_id": f"file-{i % 7}", "type": "ping", "ts": now + i}
        ).decode()
        for i in range(50)
    ]
    lines += ['{"user_id": "file-bad", "type": "ping"}', "not json at all", ""]
    path = tmp_path / "events.jsonl"
    path.write_text("\n".join(lines) + "\n")

    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "nudgeflow",
        "send",
        str(path),
        "--broker",
        worker.broker,
        "--topic-prefix",
        worker.prefix,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await proc.communicate()
    assert proc.returncode == 0, out.decode()
    assert f"sent 52 events to {worker.prefix}.events" in out.decode()

    await wait_for_metric(worker.url, "nudgeflow_events_applied_total", 50, timeout=60)
    dlq = await consume_all(worker.broker, f"{worker.prefix}.events.dlq", min_count=2, timeout=30)
    reasons = sorted(r.headers["nudgeflow-reason"].decode() for r in dlq)
    assert reasons == ["invalid_json", "missing_field"]
    stored = await consume_all(worker.broker, f"{worker.prefix}.events", min_count=52, timeout=30)
    assert {r.key for r in stored} == {f"file-{i}".encode() for i in range(7)} | {b"file-bad", None}
