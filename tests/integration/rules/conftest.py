"""Two workers of one app and one receiver for the whole module: the live rules tests
publish versions one after the other to the same rules topic (each test starts from the
version the previous one left; the kill -9 test restarts one worker, and the last one
publishes version 10)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import pytest

from nudgeflow.kafka import ruleset
from tests.fixtures.kafka import consume_all
from tests.fixtures.receivers import Receiver
from tests.fixtures.workers import WorkerProcess
from tests.integration.journeys import conftest as journeys

hook = journeys.hook  # the module's receiver (a module-scoped fixture)

CONFIG = Path(__file__).parent / "configs" / "live_rules.yaml"
DOCUMENT = CONFIG.read_text()


@dataclass
class Cluster:
    a: WorkerProcess
    b: WorkerProcess
    hook: Receiver
    broker: str
    prefix: str
    swap_delays_s: list[float] = field(default_factory=list)

    @property
    def workers(self) -> tuple[WorkerProcess, WorkerProcess]:
        return self.a, self.b

    async def apply(self, document: str, **kw: Any) -> int:
        env = {"LIVE_HOOK_URL": self.hook.url, **kw.pop("env", {})}
        applied = await ruleset.apply(
            self.broker, self.prefix, document, author="test", env=env, **kw
        )
        return applied.record.version

    async def rules(self, worker: WorkerProcess) -> dict[str, Any]:
        async with aiohttp.ClientSession() as s, s.get(f"{worker.url}/rules") as resp:
            assert resp.status == 200, await resp.text()
            body: dict[str, Any] = await resp.json()
            return body

    async def wait_version(self, version: int, *workers: WorkerProcess) -> None:
        """Until each worker runs `version` (polled; the swap takes well under a second)."""
        for worker in workers or self.workers:
            deadline = time.monotonic() + 30
            while (body := await self.rules(worker))["version"] != version:
                assert time.monotonic() < deadline, f"{worker.url} still on {body}"
                await asyncio.sleep(0.05)
            if body["swap_delay_s"] is not None:
                self.swap_delays_s.append(body["swap_delay_s"])

    async def send(self, events: list[dict[str, Any]], worker: WorkerProcess | None = None) -> None:
        status, body = await (worker or self.a).post_events(events)
        assert status == 202, body

    async def decisions(self, users: set[str], count: int) -> list[dict[str, Any]]:
        """The final decisions (fired, condition_false, suppressed) about `users`, once
        there are `count` of them."""
        deadline = time.monotonic() + 40
        while True:
            records = await consume_all(self.broker, f"{self.prefix}.decisions", timeout=5)
            found = [{**msgspec.json.decode(r.value), "partition": r.partition} for r in records]
            final = [
                d for d in found
                if d["user_id"] in users
                and d["outcome"] in ("fired", "condition_false", "suppressed")
            ]  # fmt: skip
            if len(final) >= count or time.monotonic() > deadline:
                return final
            await asyncio.sleep(0.3)

    def deliveries(self, users: set[str]) -> list[dict[str, Any]]:
        bodies = [msgspec.json.decode(r.body) for r in self.hook.requests]
        return [b for b in bodies if b.get("user_id") in users]


def cart_add(user: str, value: float) -> dict[str, Any]:
    return {
        "event_id": uuid.uuid4().hex,
        "user_id": user,
        "type": "cart_add",
        "ts": int(time.time() * 1000),
        "properties": {"value": value},
    }


@pytest.fixture(scope="module")
def cluster(
    kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory, hook: Receiver
) -> Iterator[Cluster]:
    name = uuid.uuid4().hex[:8]
    base = tmp_path_factory.mktemp("live-rules")
    env = {"LIVE_HOOK_URL": hook.url, "LIVE_EXTRA": "extra"}
    a = WorkerProcess(CONFIG, kafka_bootstrap, base / "a", f"lr{name}", f"nf-lr-{name}", env=env)
    b = WorkerProcess(
        CONFIG, kafka_bootstrap, base / "b", f"lr{name}", f"nf-lr-{name}",
        env={"LIVE_HOOK_URL": hook.url},  # no LIVE_EXTRA: a version needing it fails here
    )  # fmt: skip
    try:
        a.start()
        b.start()
        a.wait_ready()
        b.wait_ready()
        yield Cluster(a, b, hook, kafka_bootstrap, f"lr{name}")
    finally:
        a.stop()
        b.stop()
