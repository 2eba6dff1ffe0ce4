"""Two workers of one app sharing the partitions, and one receiver, for the module: the
identity tests pick ids whose partitions are owned by different workers (the group's
own assignment), so a merge always crosses from one worker to the other."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import pytest

from nudgeflow.agents.router import partition_for
from tests.faults.conftest import group_assignment
from tests.fixtures.receivers import Receiver
from tests.fixtures.workers import WorkerProcess
from tests.integration.journeys.conftest import wait_for

CONFIG = Path(__file__).parent / "configs" / "identity.yaml"
PARTITIONS = 4


@dataclass
class Pair:
    """The two workers and who owns which partition of the users' topics."""

    first: WorkerProcess
    second: WorkerProcess
    owners: dict[int, WorkerProcess]

    def owner(self, user: str) -> WorkerProcess:
        return self.owners[partition_for(user.encode(), PARTITIONS)]

    def ids(self, tag: str) -> tuple[str, str]:
        """(anonymous id, known id) whose partitions belong to different workers."""
        anon = f"anon-{tag}-{uuid.uuid4().hex[:6]}"
        for n in range(1000):
            known = f"user-{tag}-{n}"
            if self.owner(known) is not self.owner(anon):
                return anon, known
        raise AssertionError("no two ids on different workers")

    def neighbour(self, user: str, tag: str) -> str:
        """Another id in `user`'s partition (a sentinel whose timer comes after)."""
        want = partition_for(user.encode(), PARTITIONS)
        for n in range(10_000):
            other = f"sentinel-{tag}-{n}"
            if partition_for(other.encode(), PARTITIONS) == want:
                return other
        raise AssertionError("no neighbour")


@pytest.fixture(scope="module")
async def hook() -> AsyncIterator[Receiver]:
    rx = await Receiver().start()
    yield rx
    await rx.stop()


def _worker(kafka_bootstrap: str, root: Path, name: str, hook: Receiver) -> WorkerProcess:
    return WorkerProcess(
        config=CONFIG,
        broker=kafka_bootstrap,
        data_dir=root / f"worker-{uuid.uuid4().hex[:6]}",
        prefix=f"i{name}",
        app_id=f"nf-i-{name}",
        partitions=PARTITIONS,
        env={"IDENTITY_HOOK_URL": hook.url},
    )


@pytest.fixture(scope="module")
async def pair(
    kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory, hook: Receiver
) -> AsyncIterator[Pair]:
    name = uuid.uuid4().hex[:8]
    root = tmp_path_factory.mktemp("identity")
    first = _worker(kafka_bootstrap, root, name, hook).start()
    second = _worker(kafka_bootstrap, root, name, hook).start()
    try:
        await asyncio.to_thread(first.wait_ready)
        await asyncio.to_thread(second.wait_ready)
        yield Pair(first, second, await split(first, second))
    finally:
        await asyncio.to_thread(first.stop)
        await asyncio.to_thread(second.stop)


async def split(first: WorkerProcess, second: WorkerProcess, timeout: float = 90.0) -> dict:
    """Wait until both workers own partitions; partition -> its owner."""
    topic = f"{first.prefix}.events"
    deadline = time.monotonic() + timeout
    while True:
        try:
            assignment = await group_assignment(first.broker, first.app_id, topic)
        except Exception:  # the coordinator may be mid-rebalance
            assignment = {}
        owners = {
            p: w
            for w in (first, second)
            for url, parts in assignment.items()
            if f":{w.web_port}" in url
            for p in parts
        }
        if len(owners) == PARTITIONS and len(set(map(id, owners.values()))) == 2:
            return owners
        assert time.monotonic() < deadline, f"the group never split: {assignment}"
        await asyncio.sleep(0.3)


def now_ms() -> int:
    return int(time.time() * 1000)


def deliveries(rx: Receiver, user: str) -> list[dict[str, Any]]:
    """The distinct webhook bodies (by trigger id) delivered for `user`."""
    bodies = [msgspec.json.decode(r.body) for r in rx.requests]
    mine = {b["trigger_id"]: b for b in bodies if b.get("user_id") == user}
    return list(mine.values())


async def wait_delivered(rx: Receiver, user: str) -> list[dict[str, Any]]:
    """Wait on arrivals (no fixed sleep) until `user` has a delivery (journeys' helper)."""
    await wait_for(rx, user, 1)
    return deliveries(rx, user)


async def post(worker: WorkerProcess, path: str, body: Any) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as s, s.post(worker.url + path, json=body) as resp:
        return resp.status, await resp.json()


async def get_user(worker: WorkerProcess, user: str) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as s, s.get(f"{worker.url}/users/{user}") as resp:
        return resp.status, await resp.json()


async def wait_user(
    worker: WorkerProcess, user: str, check: Any, timeout: float = 30.0
) -> dict[str, Any]:
    """Poll GET /users/<id> until `check(body)` holds."""
    deadline = time.monotonic() + timeout
    body: dict[str, Any] = {}
    while time.monotonic() < deadline:
        status, body = await get_user(worker, user)
        if status == 200 and check(body):
            return body
        await asyncio.sleep(0.2)
    raise AssertionError(f"{user}: {body}")
