"""Scenario 2: event -> trigger record latency of an immediate rule at paced rates, and
trigger record -> webhook received at a local receiver.

The start is the moment the bench's paced producer hands the event to aiokafka
(also the event's `ts`); the end is the trigger record's Kafka timestamp
(CreateTime, set by the worker's producer when it sends). So the figure is the
worker's whole path (broker hop in, fetch, parse, state, engine, produce),
independent of how quickly the bench process itself reads the result.
Webhook latency is the receiver's arrival time minus the trigger record's
timestamp (same host clock).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field

import msgspec
from aiohttp import web

from nudgeflow.bench import configs, echoes
from nudgeflow.bench.kafka_io import (
    KeysSeen,
    Received,
    produce_bulk,
    produce_paced,
    provision,
    read_topic,
)
from nudgeflow.bench.results import Figure, Result, percentile, ratio, rounded
from nudgeflow.bench.session import BenchSession
from nudgeflow.bench.throughput import measure_drain
from nudgeflow.bench.workloads import Keyed, keyed
from nudgeflow.kafka.broker import free_port

log = logging.getLogger(__name__)

WARMUP_S = 1.0  # an unmeasured burst first, so connections and caches are warm
CAPACITY_PINGS = 10_000  # pre-produced pings a fresh worker drains as fast as it can


@dataclass(frozen=True, slots=True)
class Timing:
    event_ms: int
    trigger_ms: int

    @property
    def latency_ms(self) -> float:
        return float(self.trigger_ms - self.event_ms)


@dataclass
class Pings:
    """Paced `ping` events for users `<tag>-<n>`, remembering when each was sent."""

    tag: str
    sent_ms: dict[bytes, int] = field(default_factory=dict)

    def make(self, n: int, now_ms: int) -> Keyed:
        key, value = keyed(
            {
                "event_id": f"{self.tag}{n}",
                "user_id": f"{self.tag}-{n}",
                "type": "ping",
                "ts": now_ms,
            }
        )
        self.sent_ms[key] = now_ms
        return key, value

    def timings(self, triggers: list[Received]) -> dict[str, Timing]:
        """trigger_id -> (event sent, trigger record sent), first trigger record per user."""
        out: dict[str, Timing] = {}
        seen: set[bytes] = set()
        for r in triggers:
            if r.key in self.sent_ms and r.key not in seen and r.value is not None:
                seen.add(r.key)
                trigger_id = msgspec.json.decode(r.value)["trigger_id"]
                out[trigger_id] = Timing(self.sent_ms[r.key], r.timestamp_ms)
        return out


async def paced_run(
    bootstrap: str, prefix: str, partitions: int, tag: str, rate: int, seconds: float
) -> dict[str, Timing]:
    """Produce paced pings while reading the triggers topic; trigger_id -> timing."""
    pings = Pings(tag)
    expected = int(rate * seconds)
    started = asyncio.Event()
    reader = asyncio.create_task(
        read_topic(
            bootstrap,
            f"{prefix}.triggers",
            partitions,
            until=KeysSeen(pings.sent_ms, expected),
            timeout=seconds + 180,
            started=started,
        )
    )
    await started.wait()
    await produce_paced(bootstrap, f"{prefix}.events", pings.make, rate, seconds)
    return pings.timings(await reader)


class Receiver:
    """A local webhook endpoint that notes when each trigger_id arrived."""

    def __init__(self) -> None:
        self.port = free_port()
        self.arrived: dict[str, float] = {}
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    async def _hook(self, request: web.Request) -> web.Response:
        at = time.time()
        body = await request.json()
        self.arrived.setdefault(str(body.get("trigger_id")), at)
        return web.Response(status=204)

    async def __aenter__(self) -> Receiver:
        app = web.Application()
        app.router.add_post("/hook", self._hook)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


def _latencies(timings: dict[str, Timing]) -> list[float]:
    return [t.latency_ms for t in timings.values()]


def _figures(rate: int, timings: dict[str, Timing], expected: int) -> dict[str, Figure]:
    latencies = _latencies(timings)
    return {
        "rate": rate,
        "events": expected,
        "triggers": len(latencies),
        "p50_ms": rounded(percentile(latencies, 50)),
        "p95_ms": rounded(percentile(latencies, 95)),
        "p99_ms": rounded(percentile(latencies, 99)),
    }


async def baselines(
    session: BenchSession, rates: tuple[int, ...], seconds: float
) -> dict[int, dict[str, float | None]]:
    """The same paced pings through a bare Faust echo agent and a raw aiokafka echo loop
    (bench/echoes.py): the floor under the worker's figures, at each rate, in this run."""
    out: dict[int, dict[str, float | None]] = {rate: {} for rate in rates}
    bootstrap, parts = session.bootstrap, session.partitions
    for name, echo in echoes.ECHOES.items():
        prefix = session.prefix(f"latency-{name.replace('_', '-')}")
        await provision(bootstrap, prefix, parts)
        async with echo(bootstrap, prefix, parts, session.workdir):
            await paced_run(bootstrap, prefix, parts, "warm", 200, WARMUP_S)
            for rate in rates:
                got = await paced_run(bootstrap, prefix, parts, f"r{rate}", rate, seconds)
                latencies = _latencies(got)
                out[rate][f"{name}_p50_ms"] = rounded(percentile(latencies, 50))
                out[rate][f"{name}_p99_ms"] = rounded(percentile(latencies, 99))
                log.info("latency: %s baseline at %d/s: %s", name, rate, out[rate])
    return out


async def capacity(session: BenchSession, pings: int = CAPACITY_PINGS) -> dict[str, Figure]:
    """The rate the paced runs are up against: a worker draining pre-produced pings.

    Above it a paced run only measures queueing; below it, how close to it the rate is
    tells how much of the latency is queueing (docs/performance.md, "Latency").
    """
    prefix = session.prefix("capacity")
    await provision(session.bootstrap, prefix, session.partitions)
    made = Pings("cap")
    now_ms = int(time.time() * 1000)
    await produce_bulk(
        session.bootstrap, f"{prefix}.events", (made.make(n, now_ms) for n in range(pings))
    )
    config = configs.write_config(session.workdir, "capacity", configs.latency_config(None))
    worker = session.worker(config, prefix, roles=("evaluate",))
    drained = await asyncio.to_thread(measure_drain, worker, pings, 300, None)
    worker.stop()
    log.info("latency: capacity %s", drained)
    return {
        "capacity_events_per_s": rounded(drained.per_s),
        "capacity_events_per_cpu_s": rounded(drained.per_cpu_s),
    }


async def run(
    session: BenchSession, rates: tuple[int, ...], seconds: float, webhook_rate: int
) -> list[Result]:
    bootstrap = session.bootstrap
    results: list[Result] = []
    ceiling = await capacity(session)
    floors = await baselines(session, rates, seconds)
    prefix = session.prefix("latency")
    await provision(bootstrap, prefix, session.partitions)
    config = configs.write_config(session.workdir, "latency", configs.latency_config(None))
    worker = session.worker(config, prefix, roles=("evaluate",)).start()
    await asyncio.to_thread(worker.wait_ready)
    await paced_run(bootstrap, prefix, session.partitions, "warm", 200, WARMUP_S)
    for rate in rates:
        got = await paced_run(bootstrap, prefix, session.partitions, f"r{rate}", rate, seconds)
        figures = _figures(rate, got, int(rate * seconds))
        log.info("latency: %s", figures)
        p99 = percentile(_latencies(got), 99)
        floor = floors[rate]
        results.append(
            Result(
                "latency",
                {
                    **figures,
                    "webhook_p50_ms": None,
                    "webhook_p99_ms": None,
                    **floor,
                    "ratio_p99_vs_bare_faust": ratio(p99, floor["bare_faust_p99_ms"]),
                    **ceiling,
                },
            )
        )
    worker.stop()

    prefix = session.prefix("webhook")
    await provision(bootstrap, prefix, session.partitions)
    async with Receiver() as receiver:
        config = configs.write_config(
            session.workdir, "webhook", configs.latency_config(receiver.url)
        )
        worker = session.worker(config, prefix, roles=("evaluate", "deliver")).start()
        await asyncio.to_thread(worker.wait_ready)
        await paced_run(bootstrap, prefix, session.partitions, "warm", 50, WARMUP_S)
        got = await paced_run(bootstrap, prefix, session.partitions, "hook", webhook_rate, seconds)
        hooked = await _wait_for(receiver, got, timeout=60)
        worker.stop()
    figures = _figures(webhook_rate, got, int(webhook_rate * seconds))
    figures["webhook_p50_ms"] = rounded(percentile(hooked, 50))
    figures["webhook_p99_ms"] = rounded(percentile(hooked, 99))
    log.info("latency (with webhooks): %s", figures)
    results.append(Result("latency", {**figures, **ceiling}))
    return results


async def _wait_for(receiver: Receiver, timings: dict[str, Timing], timeout: float) -> list[float]:
    """Trigger record -> webhook received, ms, for every trigger that reached the receiver."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not set(timings) <= set(receiver.arrived):
        await asyncio.sleep(0.2)
    return [
        receiver.arrived[tid] * 1000 - t.trigger_ms
        for tid, t in timings.items()
        if tid in receiver.arrived
    ]
