"""Rebalances and SIGTERM send nothing twice (issue 22.4): real Kafka, real worker processes.

The receiver takes 1 s to answer, so every moment has calls in flight. A second worker
joins (a rebalance: the first hands back what it has not called yet and finishes its
calls), then the first is stopped with SIGTERM while it is busy (the same, then it
commits and leaves). A webhook whose call was made before either event must not be
called again by the new owner; nothing may be lost.
"""

from __future__ import annotations

import asyncio
import collections
import re
from typing import Any

import pytest

from tests.fixtures.receivers import ReceiverFactory, hang
from tests.integration.delivery.conftest import StartWorker, make_trigger, wait_until

pytestmark = pytest.mark.kafka

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
TRIGGERS = 80


def local(url: str, **kw: Any) -> dict[str, Any]:
    return {"url": url, "secret": SECRET, "allow_private": True, **kw}


def owned(log: str) -> int | None:
    """How many triggers partitions the worker said it owns, last time it said."""
    found = re.findall(r"this worker owns (\d+) of \d+ triggers partitions", log)
    return int(found[-1]) if found else None


async def test_rebalance_and_sigterm_under_load_send_each_webhook_once(
    start_deliver_worker: StartWorker, receiver_factory: ReceiverFactory
) -> None:
    rx = await receiver_factory(default=hang(1.0))  # answers 200 after 1 s: 4 calls/s
    first = await start_deliver_worker({"slow": local(rx.url, timeout=5.0, concurrency=4)})
    await first.produce([make_trigger("warmup", ["slow"])])
    await wait_until(lambda: rx.ids() == ["trg-warmup"], 90, "warm-up", first)

    wanted = {f"trg-{n}" for n in range(TRIGGERS)}
    await first.produce([make_trigger(n, ["slow"]) for n in range(TRIGGERS)])
    await wait_until(lambda: len(rx.requests) >= 10, 30, "calls in flight", first)
    own_dir = {**first.spec, "data_dir": first.spec["data_dir"] + "-second"}
    second = await start_deliver_worker({}, spec=own_dir)  # joins: a rebalance
    await wait_until(
        lambda: owned(first.tail(100_000)) == 1 and owned(second.tail(100_000)) == 1,
        60,
        "one partition each",
        second,
    )
    busy = len(rx.requests)
    assert busy < TRIGGERS + 1, "all delivered before the restart: the test proves nothing"
    await asyncio.to_thread(first.stop)  # SIGTERM with calls in flight (receivers keep going)
    log = first.tail(1_000_000)
    assert first.proc is not None and first.proc.returncode == 0, log[-3000:]
    assert len(re.findall(r"deliver: handed back \d+ records", log)) >= 2  # rebalance, stop
    assert "delivery failed" not in log  # the calls in flight were let finish

    await wait_until(lambda: set(rx.ids(200)) >= wanted, 90, "every trigger", second)
    counts = collections.Counter(i for i in rx.ids(200) if i in wanted)
    assert {i: c for i, c in counts.items() if c > 1} == {}  # no webhook twice
    assert set(counts) == wanted  # none lost
    print(f"\n[shutdown] {busy} calls made before SIGTERM; {TRIGGERS} delivered once each")
