"""One worker under observation, shared by this package's tests (a worker start is the slow
part): debug-level JSON logs, secrets from the environment, a good and a failing webhook
destination, and traffic that moves every metric family.
"""

from __future__ import annotations

import base64
import secrets
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.fixtures.metrics import scrape, wait_for_metric
from tests.fixtures.receivers import Receiver, respond
from tests.fixtures.workers import WorkerProcess

pytestmark = pytest.mark.kafka

CONFIG = Path(__file__).parent / "configs" / "observed.yaml"
USERS = [f"obs-u{i}" for i in range(10)]


@dataclass
class Observed:
    worker: WorkerProcess
    secrets: dict[str, str]  # env var -> secret value
    good: Receiver
    flaky: Receiver

    @property
    def token(self) -> str:
        return self.secrets["NUDGEFLOW_API_TOKEN"]


def _whsec() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()


def event(user: str, type_: str, **props: object) -> dict:
    return {
        "event_id": uuid.uuid4().hex,
        "user_id": user,
        "type": type_,
        "ts": int(time.time() * 1000),
        "properties": props,
    }


async def post(obs: Observed, events: list[dict]) -> None:
    status, body = await obs.worker.post_events(events, token=obs.token)
    assert status == 202, body


@pytest.fixture(scope="package")
async def observed(
    kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Observed]:
    good = await Receiver(default=respond(200)).start()
    flaky = await Receiver(default=respond(503)).start()
    secret_env = {
        "NF_OBS_GOOD_SECRET": _whsec(),
        "NF_OBS_FLAKY_SECRET": _whsec(),
        "NF_OBS_HEADER_KEY": "hdr-" + secrets.token_hex(16),
        "NUDGEFLOW_API_TOKEN": "tok-" + secrets.token_hex(16),
        "NUDGEFLOW_SECRET": "eng-" + secrets.token_hex(16),
    }
    name = uuid.uuid4().hex[:8]
    worker = WorkerProcess(
        config=CONFIG,
        broker=kafka_bootstrap,
        data_dir=tmp_path_factory.mktemp("observed") / "data",
        prefix=f"obs{name}",
        app_id=f"nf-obs-{name}",
        env={
            **secret_env,
            "NF_OBS_GOOD_URL": good.url,
            "NF_OBS_FLAKY_URL": flaky.url,
            "NUDGEFLOW_LOG_FORMAT": "json",
        },
        log_level="debug",
    ).start()
    obs = Observed(worker, secret_env, good, flaky)
    try:
        worker.wait_ready(timeout=120)
        await _drive_traffic(obs)
        yield obs
    finally:
        worker.stop()
        await good.stop()
        await flaky.stop()


async def _drive_traffic(obs: Observed) -> None:
    """Every metric family moves: pings (instant triggers, good + failing webhooks), carts
    (a 2 s timer inside an experiment, then purchases = conversions), signups (armed for
    an hour = pending timers) and one malformed event (rejected)."""
    url = obs.worker.url
    await post(obs, [event(u, "signup") for u in USERS])
    await post(obs, [event(u, "cart_add", product_id="p1", price=60.0) for u in USERS])
    await post(obs, [event(u, "ping") for u in USERS])
    status, _ = await obs.worker.post_events([{"type": "ping"}], token=obs.token)
    assert status >= 400  # no user id: refused, counted as rejected

    assert await wait_for_metric(url, 'nudgeflow_dead_letters_total{topic="triggers.dlq"}', 1) >= 1
    assert await wait_for_metric(url, "nudgeflow_timer_lateness_seconds_count", 1) >= 1
    # Conversions: purchases after the cart reminders fired (control users count too).
    exposures = await _wait_sum(url, "nudgeflow_experiment_exposures_total", len(USERS))
    assert exposures >= len(USERS)
    await post(obs, [event(u, "purchase", order_id=f"o-{u}") for u in USERS])
    assert await _wait_sum(url, "nudgeflow_experiment_conversions_total", len(USERS)) >= len(USERS)


async def _wait_sum(url: str, prefix: str, at_least: float, timeout: float = 120) -> float:
    """Sum of every sample whose name (with labels) starts with `prefix`, polled."""
    import asyncio

    deadline = time.monotonic() + timeout
    total = 0.0
    while time.monotonic() < deadline:
        samples = await scrape(url)
        total = sum(v for k, v in samples.items() if k.split("{")[0] == prefix)
        if total >= at_least:
            return total
        await asyncio.sleep(0.5)
    return total
