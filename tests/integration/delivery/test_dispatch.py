"""Attempt -> verdict -> next step against real receivers, retries run in-process.

The Kafka side (retry topics, DLQ, dedupe table) is covered by test_agent.py;
here the same policy chain runs with the retry delay slept in place.
"""

from __future__ import annotations

import asyncio
import random
import statistics
import time

import pytest

from nudgeflow.config.destinations import DeliverySettings, Destination
from nudgeflow.delivery.dispatch import Dispatcher, Step
from nudgeflow.delivery.retry import Outcome
from nudgeflow.delivery.sender import Sender
from nudgeflow.engine.actions import Trigger
from tests import factories
from tests.fixtures.receivers import Receiver, ReceiverFactory, hang, respond

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
FAST = DeliverySettings(
    retry_schedule=["200ms", "500ms", "1s"], breaker_min_calls=3, breaker_reset="1s"
)


def trigger(n: int = 1, dests: tuple[str, ...] = ("d",)) -> Trigger:
    return factories.trigger(f"t-{n}", user_id=f"u{n}", destinations=list(dests))


def dest(url: str, **kw: object) -> Destination:
    return Destination(url=url, secret=SECRET, allow_private=True, **kw)  # type: ignore[arg-type]


async def run_to_end(dispatcher: Dispatcher, t: Trigger, name: str = "d") -> list[Step]:
    """Attempt until an end; a deferral (open circuit) waits for the reset and spends no
    attempt, as the wait topic would."""
    steps, attempt = [], 1
    while True:
        step = await dispatcher.attempt(t, name, attempt)
        steps.append(step)
        if step.outcome is Outcome.DEFERRED:
            assert step.attempt == attempt - 1
            await asyncio.sleep(FAST.breaker_reset_s)
            continue
        if step.outcome is not Outcome.RETRY:
            return steps
        assert step.delay_s is not None
        await asyncio.sleep(step.delay_s)
        attempt += 1


def calls(steps: list[Step]) -> list[Step]:
    return [s for s in steps if s.outcome is not Outcome.DEFERRED]


@pytest.fixture
async def sender():  # type: ignore[no-untyped-def]
    s = Sender()
    yield s
    await s.close()


def make(rx_or_url: Receiver | str, sender: Sender, **kw: object) -> Dispatcher:
    url = rx_or_url.url if isinstance(rx_or_url, Receiver) else rx_or_url
    return Dispatcher({"d": dest(url, **kw)}, FAST, sender, rng=random.Random(1))


async def test_200_delivered_once(receiver_factory: ReceiverFactory, sender: Sender) -> None:
    rx = await receiver_factory()
    steps = await run_to_end(make(rx, sender), trigger())
    assert [s.outcome for s in steps] == [Outcome.DELIVERED]
    assert rx.ids() == ["t-1"]


async def test_500_twice_then_200(receiver_factory: ReceiverFactory, sender: Sender) -> None:
    rx = await receiver_factory(script=[respond(500), respond(500)])
    steps = await run_to_end(make(rx, sender), trigger())
    assert [s.outcome for s in steps] == [Outcome.RETRY, Outcome.RETRY, Outcome.DELIVERED]
    assert [s.tier for s in steps[:2]] == [0, 1]
    assert rx.ids() == ["t-1"] * 3  # same webhook-id on every retry
    assert rx.ids(200) == ["t-1"]


async def test_429_honours_retry_after(receiver_factory: ReceiverFactory, sender: Sender) -> None:
    rx = await receiver_factory(script=[respond(429, retry_after="1")])
    steps = await run_to_end(make(rx, sender), trigger())
    assert [s.outcome for s in steps] == [Outcome.RETRY, Outcome.DELIVERED]
    assert steps[0].delay_s == 1.0  # not the 200ms schedule
    assert rx.requests[1].at - rx.requests[0].at >= 1.0


async def test_hang_past_timeout_exhausts_to_dead(
    receiver_factory: ReceiverFactory, sender: Sender
) -> None:
    rx = await receiver_factory(default=hang(10))
    d = Dispatcher(
        {"d": dest(rx.url, timeout=0.2)},
        DeliverySettings(retry_schedule=["100ms"], breaker_min_calls=10),
        sender,
    )
    steps = await run_to_end(d, trigger())
    assert [(s.outcome, s.result.error_class) for s in steps] == [
        (Outcome.RETRY, "timeout"),
        (Outcome.DEAD, "timeout"),
    ]
    assert steps[-1].reason == "retries_exhausted"


@pytest.mark.parametrize(
    ("status", "reason"), [(410, "gone"), (302, "redirect"), (404, "status_404")]
)
async def test_dead_letter_statuses(
    receiver_factory: ReceiverFactory, sender: Sender, status: int, reason: str
) -> None:
    rx = await receiver_factory(default=respond(status, location="/elsewhere"))
    steps = await run_to_end(make(rx, sender), trigger())
    assert [(s.outcome, s.reason) for s in steps] == [(Outcome.DEAD, reason)]
    assert len(rx.requests) == 1


async def test_connection_refused_retries_then_dead(closed_port: int, sender: Sender) -> None:
    steps = await run_to_end(make(f"http://127.0.0.1:{closed_port}/", sender), trigger())
    made = calls(steps)
    assert [s.result.error_class for s in made] == ["connection"] * FAST.max_attempts
    assert [s.attempt for s in made] == list(range(1, FAST.max_attempts + 1))
    # the third failure opened the circuit; the fourth attempt was its probe (deferrals
    # before it, if any, spent nothing)
    assert steps[-1].outcome is Outcome.DEAD


async def test_private_destinations_refused_unless_allowed(
    receiver_factory: ReceiverFactory, sender: Sender
) -> None:
    rx = await receiver_factory()
    url = f"http://localhost:{rx.port}/hook"  # resolves to 127.0.0.1
    guarded = Dispatcher({"d": Destination(url=url)}, FAST, sender)
    steps = await run_to_end(guarded, trigger())
    assert [(s.outcome, s.reason) for s in steps] == [(Outcome.DEAD, "ssrf")]
    assert rx.requests == []
    allowed = Dispatcher({"d": Destination(url=url, allow_private=True)}, FAST, sender)
    assert (await run_to_end(allowed, trigger()))[-1].outcome is Outcome.DELIVERED
    assert rx.ids() == ["t-1"]


async def test_breaker_opens_and_defers_without_spending(
    receiver_factory: ReceiverFactory, sender: Sender
) -> None:
    rx = await receiver_factory(default=respond(503))
    d = make(rx, sender)
    steps = [await d.attempt(trigger(n), "d", 1) for n in range(5)]
    assert len(rx.requests) == 3  # 3 calls, all failed (>= 70%): the last two never left
    assert [s.outcome for s in steps] == [Outcome.RETRY] * 3 + [Outcome.DEFERRED] * 2
    assert [s.attempt for s in steps[3:]] == [0, 0]  # no call, no attempt spent
    later = await d.attempt(trigger(9), "d", 3)
    assert later.outcome is Outcome.DEFERRED and later.attempt == 2

    rx.default = respond(200)  # the endpoint recovers; the probe after the reset closes it
    await asyncio.sleep(FAST.breaker_reset_s)
    probe = await d.attempt(trigger(9), "d", 3)
    assert (probe.outcome, probe.attempt) == (Outcome.DELIVERED, 3)
    assert (await d.attempt(trigger(10), "d", 1)).outcome is Outcome.DELIVERED
    assert rx.ids(200) == ["t-9", "t-10"]


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def test_hanging_destination_does_not_slow_healthy_one(
    receiver_factory: ReceiverFactory, sender: Sender
) -> None:
    healthy = await receiver_factory()
    stuck = await receiver_factory(default=hang(30))
    d = Dispatcher({"ok": dest(healthy.url), "stuck": dest(stuck.url, timeout=2.0)}, FAST, sender)

    async def one(n: int, names: tuple[str, ...]) -> float:
        started = time.perf_counter()
        tasks = {name: asyncio.create_task(d.attempt(trigger(n, names), name, 1)) for name in names}
        await tasks["ok"]
        elapsed = time.perf_counter() - started
        await asyncio.gather(*tasks.values())
        return elapsed

    async def run(names: tuple[str, ...], base: int) -> list[float]:
        out = await asyncio.gather(*(one(base + i, names) for i in range(100)))
        return list(out)

    alone = await run(("ok",), 0)
    mixed = await run(("ok", "stuck"), 1000)
    print(
        f"\nhealthy alone:      p50={statistics.median(alone) * 1000:.1f}ms "
        f"p99={pct(alone, 0.99) * 1000:.1f}ms"
    )
    print(
        f"healthy + hanging:  p50={statistics.median(mixed) * 1000:.1f}ms "
        f"p99={pct(mixed, 0.99) * 1000:.1f}ms"
    )
    assert len(healthy.ids(200)) == 200
    assert pct(mixed, 0.99) < 1.5  # generous sanity: far below the 2s hang timeout
