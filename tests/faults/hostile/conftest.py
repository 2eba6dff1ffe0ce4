"""Two live workers of one app for the hostile-input tests (issue 21 items 3-7).

The pair is shared by the package: starting a worker costs seconds and every test
here only sends its own users and records (ids carry a per-run tag). The flood test
(test_http.py) starts its own worker, since it runs it under a lowered fd limit.
Both workers allow one extra browser origin (`ALLOWED_ORIGIN`), where the Chromium
test serves its "partner" page; every other origin is foreign.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from yarl import URL

from tests.faults.conftest import group_assignment, partition_of
from tests.fixtures.workers import WorkerProcess, free_port
from tests.integration.audit.conftest import eventually

__all__ = [
    "ALLOWED_ORIGIN",
    "ALLOWED_PORT",
    "HOSTILE_RULES",
    "Pair",
    "eventually",
    "get_raw",
    "hostile_config",
]

PARTITIONS = 4
ALLOWED_PORT = free_port()
ALLOWED_ORIGIN = f"http://127.0.0.1:{ALLOWED_PORT}"


# Templates of the findings (21.1), each harmless for the sample user (the
# start-up check) and for ordinary users, over budget for a user whose traits ask for it.
HOSTILE_TEMPLATES = {
    "tower.j2": "{% set k = user.k|default(1) %}{{ ((((10 ** k) ** k) ** k) ** k) % 7 }}",
    "loops.j2": "{% for i in range(user.n|default(1)) %}{% for j in range(user.n|default(1)) %}"
    "{% endfor %}{% endfor %}ok",
    "printf.j2": "{{ ('%0*d' % (user.w|default(1), 1))|length }}",
    "center.j2": "{{ ('a'|center(user.w|default(1)))|length }}",
    "round.j2": "{{ cart.count|round(user.p|default(0)) }}",
}
HOSTILE_RULES = [f"render_{name.removesuffix('.j2')}" for name in HOSTILE_TEMPLATES]


def hostile_config(path: Path) -> Path:
    """An immediate rule, a one-hour inactivity rule that arms on cart_add, and one rule
    per hostile template, each sent on `greet`."""
    doc: dict[str, Any] = {
        "templates": HOSTILE_TEMPLATES,
        "rules": [
            {"name": "ping", "trigger": "ping"},
            {"name": "cart_reminder", "trigger": "cart_add", "inactivity": "1h"},
            *(
                {"name": rule, "trigger": "greet", "template": template}
                for rule, template in zip(HOSTILE_RULES, HOSTILE_TEMPLATES, strict=True)
            ),
            {
                "name": "render_when",
                "trigger": "greet",
                "when": "('x' * (user.w|default(1))) | length > 0",
            },
        ],
    }
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


class Pair:
    """Two workers sharing the partitions; knows which one owns a user."""

    def __init__(self, a: WorkerProcess, b: WorkerProcess) -> None:
        self.a, self.b = a, b
        self.tag = uuid.uuid4().hex[:6]
        self.owners: dict[int, WorkerProcess] = {}

    @property
    def workers(self) -> tuple[WorkerProcess, WorkerProcess]:
        return self.a, self.b

    @property
    def prefix(self) -> str:
        return self.a.prefix

    @property
    def broker(self) -> str:
        return self.a.broker

    async def learn_owners(self) -> None:
        """Partition -> worker from the consumer group itself, once both hold some."""
        by_url = {w.url: w for w in self.workers}
        for _ in range(120):
            owned = await group_assignment(self.broker, self.a.app_id, f"{self.prefix}.events")
            if set(owned) == set(by_url) and sum(len(p) for p in owned.values()) == PARTITIONS:
                self.owners = {p: by_url[url] for url, ps in owned.items() for p in ps}
                return
            await asyncio.sleep(0.5)
        raise AssertionError(f"the two workers never shared the partitions: {owned}")

    def owner(self, user_id: str) -> WorkerProcess:
        return self.owners[partition_of(user_id, PARTITIONS)]

    def other(self, user_id: str) -> WorkerProcess:
        """The worker that does NOT own `user_id`: it has to forward."""
        owner = self.owner(user_id)
        return self.b if owner is self.a else self.a


@pytest.fixture(scope="package")
async def pair(
    kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Pair]:
    root = tmp_path_factory.mktemp("hostile")
    config = hostile_config(root / "hostile.yaml")
    tag = f"hostile-{uuid.uuid4().hex[:6]}"
    # the render clock is generous, so which limit a hostile render names does not
    # depend on how busy the shared machine is (the unit tests cover wall_time_ms)
    env = {"NUDGEFLOW_ALLOWED_ORIGINS": ALLOWED_ORIGIN, "NUDGEFLOW_RENDER_WALL_TIME_MS": "5000"}
    workers = [
        WorkerProcess(
            config=config,
            broker=kafka_bootstrap,
            data_dir=root / f"worker-{n}",
            prefix=tag,
            app_id=tag,
            partitions=PARTITIONS,
            env=env,
        ).start()
        for n in range(2)
    ]
    try:
        await asyncio.gather(*(asyncio.to_thread(w.wait_ready, 120.0) for w in workers))
        both = Pair(*workers)
        await both.learn_owners()
        yield both
    finally:
        for w in workers:
            await asyncio.to_thread(w.stop)


async def get_raw(base: str, raw_path: str, **kw: Any) -> tuple[int, str]:
    """GET exactly `raw_path` (already percent-encoded; no client normalisation)."""
    url = URL(base).with_path(raw_path, encoded=True)
    timeout = aiohttp.ClientTimeout(total=15)
    async with aiohttp.ClientSession(timeout=timeout) as s, s.get(url, **kw) as resp:
        return resp.status, await resp.text()
