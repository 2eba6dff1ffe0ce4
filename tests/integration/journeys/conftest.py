"""One worker and one receiver for the whole module: the journeys' timings are seconds,
so the tests share the start-up (the kill -9 test, last, restarts the same worker)."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import pytest

from tests.fixtures.receivers import Receiver
from tests.fixtures.workers import WorkerProcess

CONFIG = Path(__file__).parent / "configs" / "journeys.yaml"


@pytest.fixture(scope="module")
async def hook() -> AsyncIterator[Receiver]:
    rx = await Receiver().start()
    yield rx
    await rx.stop()


@pytest.fixture(scope="module")
def journey_worker(
    kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory, hook: Receiver
) -> Iterator[WorkerProcess]:
    name = uuid.uuid4().hex[:8]
    worker = WorkerProcess(
        config=CONFIG,
        broker=kafka_bootstrap,
        data_dir=tmp_path_factory.mktemp("journeys") / "worker",
        prefix=f"j{name}",
        app_id=f"nf-j-{name}",
        env={"JOURNEY_HOOK_URL": hook.url},
    ).start()
    try:
        worker.wait_ready()
        yield worker
    finally:
        worker.stop()


def event(user: str, type_: str, ts: int, **props: Any) -> dict[str, Any]:
    return {"event_id": uuid.uuid4().hex, "user_id": user, "type": type_, "ts": ts,
            "properties": props}  # fmt: skip


def now_ms() -> int:
    return int(time.time() * 1000)


def payloads(rx: Receiver, user: str) -> list[dict[str, Any]]:
    """The webhook bodies delivered for `user`, in arrival order."""
    bodies = [msgspec.json.decode(r.body) for r in rx.requests]
    return [b for b in bodies if b.get("user_id") == user]


async def wait_for(
    rx: Receiver, user: str, count: int, timeout: float = 30.0
) -> list[dict[str, Any]]:
    """Wait (on arrivals, not a fixed sleep) until `user` has `count` distinct deliveries."""
    deadline = time.monotonic() + timeout
    while True:
        got = payloads(rx, user)
        if len({b["trigger_id"] for b in got}) >= count:
            return got
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"{user}: {len(got)} deliveries after {timeout}s: {got}")
        try:
            await rx.wait_for(len(rx.requests) + 1, timeout=left)
        except TimeoutError:
            continue


async def get_user(worker: WorkerProcess, user: str) -> dict[str, Any]:
    async with aiohttp.ClientSession() as s, s.get(f"{worker.url}/users/{user}") as resp:
        assert resp.status == 200, await resp.text()
        body: dict[str, Any] = await resp.json()
        return body
