"""One worker and one receiver for the module (the erasure and click tests share the
start-up); helpers to read what the receiver got and what the worker shows."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import pytest

from tests.fixtures.receivers import Receiver
from tests.fixtures.workers import WorkerProcess, ready_worker
from tests.integration.journeys.conftest import event, hook, now_ms

__all__ = ["event", "hook", "now_ms"]  # the journeys' module receiver and event helpers

CONFIG = Path(__file__).parent / "configs" / "privacy.yaml"


@pytest.fixture(scope="module")
def privacy_worker(
    kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory, hook: Receiver
) -> Iterator[WorkerProcess]:
    data_dir = tmp_path_factory.mktemp("privacy") / "worker"
    env = {"PRIVACY_HOOK_URL": hook.url}
    with ready_worker(CONFIG, kafka_bootstrap, data_dir, "p", env) as worker:
        yield worker


def received(rx: Receiver, user: str) -> list[tuple[int, dict[str, Any]]]:
    """(status answered, webhook body) of every request for `user`, in arrival order."""
    out = [(r.status, msgspec.json.decode(r.body)) for r in rx.requests]
    return [(status, body) for status, body in out if body.get("user_id") == user]


async def wait_for(rx: Receiver, user: str, count: int, timeout: float = 30.0) -> list[Any]:
    """Wait (on arrivals, not a fixed sleep) until `user` has `count` requests."""
    deadline = time.monotonic() + timeout
    while len(got := received(rx, user)) < count:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"{user}: {len(got)} requests after {timeout}s: {got}")
        try:
            await rx.wait_for(len(rx.requests) + 1, timeout=left)
        except TimeoutError:
            continue
    return got


async def call(method: str, url: str, **kw: Any) -> tuple[int, Any, dict[str, str]]:
    async with aiohttp.ClientSession() as s, s.request(method, url, **kw) as resp:
        body = await resp.read()
        data = msgspec.json.decode(body) if body and resp.content_type.endswith("json") else body
        return resp.status, data, dict(resp.headers)
