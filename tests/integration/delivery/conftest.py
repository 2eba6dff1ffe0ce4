"""Run the deliver agents in a subprocess worker against the suite's Kafka broker."""

from __future__ import annotations

import asyncio
import collections
import json
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import pytest
from aiohttp import web
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from nudgeflow.config.topics import TopicNames
from nudgeflow.delivery.records import wait_topic
from nudgeflow.engine.actions import Trigger
from tests import factories
from tests.fixtures.kafka import Record, consume_all, create_topics, produce
from tests.fixtures.receivers import Received, Receiver
from tests.fixtures.workers import ARTIFACTS, kill_group, stop_group

FAST_DELIVERY = {
    "retry_schedule": ["200ms", "500ms", "1s"],
    "breaker_min_calls": 50,
    "breaker_reset": "1s",
}


def make_trigger(n: int | str, dests: list[str], **fields: Any) -> Trigger:
    return factories.trigger(
        f"trg-{n}",
        user_id=f"user-{n}",
        message=f"Come back, user {n}",
        destinations=dests,
        fields=fields,
    )


def as_record(t: Trigger) -> Record:
    return Record(value=msgspec.json.encode(t), key=t.user_id.encode())


@dataclass
class DeliverWorker:
    spec: dict[str, Any]
    spec_path: Path
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path = field(
        default_factory=lambda: ARTIFACTS / f"deliver-{uuid.uuid4().hex[:6]}.log"
    )

    @property
    def topics(self) -> TopicNames:
        return TopicNames(self.spec["prefix"])

    def start(self) -> DeliverWorker:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "tests.integration.delivery.deliver_worker",
                    str(self.spec_path),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self

    def kill(self) -> None:
        kill_group(self.proc)

    def stop(self) -> None:
        stop_group(self.proc, timeout=20)

    def tail(self, n: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-n:] if self.log_path.exists() else ""

    async def produce(self, triggers: list[Trigger] | list[Record]) -> None:
        records = [t if isinstance(t, Record) else as_record(t) for t in triggers]
        await produce(self.spec["broker"], self.topics.triggers, records)


StartWorker = Callable[..., Awaitable[DeliverWorker]]


async def wait_until(
    check: Callable[[], bool], timeout: float, what: str, worker: DeliverWorker | None = None
) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}\n{worker.tail() if worker else ''}")
        if worker is not None and worker.proc is not None and worker.proc.poll() is not None:
            raise AssertionError(f"worker exited while waiting for {what}\n{worker.tail()}")
        await asyncio.sleep(0.1)


@pytest.fixture
async def start_deliver_worker(kafka_bootstrap: str, tmp_path: Path) -> AsyncIterator[StartWorker]:
    """start(destinations, delivery=FAST_DELIVERY, partitions=2) -> a running worker.

    Topics are created first (so the test can produce at once); the worker's
    consumer group starts from the beginning of them.
    """
    started: list[DeliverWorker] = []

    async def start(
        destinations: dict[str, dict[str, Any]],
        delivery: dict[str, Any] | None = None,
        partitions: int = 2,
        spec: dict[str, Any] | None = None,
    ) -> DeliverWorker:
        if spec is None:
            name = uuid.uuid4().hex[:8]
            spec = {
                "broker": kafka_bootstrap,
                "prefix": f"d{name}",
                "app_id": f"deliver-{name}",
                "data_dir": str(tmp_path / f"data-{name}"),
                "partitions": partitions,
                "destinations": destinations,
                "delivery": delivery or FAST_DELIVERY,
            }
            t = TopicNames(spec["prefix"])
            tiers = len(spec["delivery"]["retry_schedule"])
            await create_topics(
                kafka_bootstrap,
                [
                    t.triggers,
                    t.triggers_dlq,
                    t.deliveries,
                    *(t.triggers_retry(i) for i in range(tiers)),
                    *(wait_topic(spec["prefix"], name) for name in destinations),
                ],
                partitions=partitions,
            )
        path = tmp_path / f"spec-{uuid.uuid4().hex[:6]}.json"
        path.write_text(json.dumps(spec))
        w = DeliverWorker(spec, path).start()
        started.append(w)
        return w

    yield start
    for w in started:
        w.stop()


class ByIdReceiver(Receiver):
    """A real receiver that answers by webhook-id and call count, and verifies every call
    with the reference `standardwebhooks` library (a bad signature gets 401).

    `answer(webhook_id, nth_call_for_that_id)` -> status; `calls` counts per id.
    """

    def __init__(self, secret: str, answer: Callable[[str, int], int]) -> None:
        super().__init__()
        self.verifier = Webhook(secret)
        self.answer = answer
        self.calls: collections.Counter[str] = collections.Counter()

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        headers = {k.lower(): v for k, v in request.headers.items()}
        msg_id = headers.get("webhook-id", "")
        try:
            self.verifier.verify(body, headers)
            self.calls[msg_id] += 1
            status = self.answer(msg_id, self.calls[msg_id])
        except WebhookVerificationError:
            status = 401
        self.requests.append(Received(request.path, headers, body, time.monotonic(), status))
        return web.Response(status=status)


@pytest.fixture
async def by_id_receiver() -> AsyncIterator[Callable[..., Awaitable[ByIdReceiver]]]:
    started: list[ByIdReceiver] = []

    async def make(secret: str, answer: Callable[[str, int], int]) -> ByIdReceiver:
        rx = ByIdReceiver(secret, answer)
        await rx.start()
        started.append(rx)
        return rx

    yield make
    for rx in started:
        await rx.stop()


async def attempts_by_trigger(worker: DeliverWorker, min_count: int) -> dict[str, list[int]]:
    """trigger id -> the attempt numbers recorded on `<prefix>.deliveries`, in order."""
    records = await consume_all(
        worker.spec["broker"], worker.topics.deliveries, min_count=min_count, timeout=30
    )
    out: dict[str, list[int]] = collections.defaultdict(list)
    for r in records:
        rec = msgspec.json.decode(r.value or b"")
        out[rec["trigger_id"]].append(rec["attempt"])
    return dict(out)
