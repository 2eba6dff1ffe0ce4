"""Bad input against a live worker (issue 2): every malformed record is explained, none kills it.

The malformed inputs are the parser's own table (tests/unit/events/test_parse.py),
sent for real: as raw Kafka records to `<prefix>.events` (each must land on the
DLQ with its reason) and as HTTP bodies (each must get a 4xx naming it).
"""

from __future__ import annotations

import json
import time
import uuid

import aiohttp
import msgspec
import pytest

from tests.fixtures.kafka import Record, consume_all, produce
from tests.unit.events.test_parse import MALFORMED, NOW

pytestmark = pytest.mark.kafka


def _shifted_to_today(raw: bytes) -> bytes:
    """The table's events are dated 2024-05-01; move integer timestamps to now so a live
    worker judges them on the same terms (an old `ts` would mask the intended fault)."""
    try:
        obj = json.loads(raw)
    except (ValueError, RecursionError):
        return raw
    ts = obj.get("ts") if isinstance(obj, dict) else None
    if type(ts) is not int or not -(10**15) < ts < 10**15:
        return raw
    return json.dumps({**obj, "ts": ts + int(time.time() * 1000) - NOW}).encode()


# Byte inputs only: the Mapping/str rows test the Python API, not the wire.
WIRE = [
    (name, _shifted_to_today(raw), reason)
    for name, raw, reason, _field in MALFORMED
    if isinstance(raw, bytes)
]


def test_the_wire_table_is_large_enough() -> None:
    assert len(WIRE) >= 20


async def test_malformed_kafka_records_go_to_the_dlq_with_their_reason(
    start_worker, live_config, evaluate_only
):
    worker = start_worker(live_config)
    await produce(
        worker.broker,
        f"{worker.prefix}.events",
        [Record(value=raw, headers=[("case", name.encode())]) for name, raw, _ in WIRE],
    )
    good = {
        "event_id": uuid.uuid4().hex,
        "user_id": "after",
        "type": "ping",
        "ts": int(time.time() * 1000),
    }
    await produce(
        worker.broker,
        f"{worker.prefix}.events",
        [Record(value=msgspec.json.encode(good), key=b"after")],
    )

    dlq = await consume_all(
        worker.broker, f"{worker.prefix}.events.dlq", min_count=len(WIRE), timeout=60
    )
    by_value = {r.value: r for r in dlq}
    for name, raw, reason in WIRE:
        record = by_value.get(raw)
        assert record is not None, f"{name} did not reach the DLQ"
        assert record.headers["nudgeflow-reason"].decode() == reason, name
        assert record.headers["nudgeflow-error"], name
    assert len(dlq) == len(WIRE)

    # The worker is still alive and still applying events.
    triggers = await consume_all(
        worker.broker, f"{worker.prefix}.triggers", min_count=1, timeout=30
    )
    assert [msgspec.json.decode(t.value)["user_id"] for t in triggers] == ["after"]
    async with aiohttp.ClientSession() as s, s.get(worker.url + "/health") as resp:
        assert resp.status == 200


async def test_malformed_http_bodies_get_a_4xx_naming_the_problem(
    start_worker, live_config, evaluate_only
):
    worker = start_worker(live_config)
    async with aiohttp.ClientSession() as session:
        for name, raw, reason in WIRE:
            async with session.post(
                worker.url + "/events", data=raw, headers={"Content-Type": "application/json"}
            ) as resp:
                body = await resp.json()
                assert resp.status in (400, 413), (name, resp.status, body)
                reasons = {e["reason"] for e in body.get("errors", [])} | {body.get("code")}
                if raw.lstrip().startswith(b"["):
                    # Over HTTP an array is a batch: the error names the bad item instead.
                    assert body["errors"][0]["index"] == 0, (name, body)
                else:
                    assert reason in reasons, (name, body)
        async with session.get(worker.url + "/health") as resp:
            assert resp.status == 200
    stored = await consume_all(worker.broker, f"{worker.prefix}.events", timeout=5)
    assert stored == []  # nothing half-accepted
