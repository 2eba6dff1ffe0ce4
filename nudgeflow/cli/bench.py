"""`nudgeflow bench [SCENARIO...]`: measure throughput, latency, timers, memory, recovery
and backtest speed against a real Kafka broker (started here unless --broker is given)."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import sys
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import click

from nudgeflow.bench.results import Result, format_table
from nudgeflow.bench.session import BenchSession

SCENARIOS = ("throughput", "latency", "timers", "memory", "recovery", "backtest")
LIVE = frozenset(SCENARIOS) - {"backtest"}


def _sizes(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(part.replace("_", "")) for part in text.split(",") if part.strip())
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers, got {text!r}") from None


@contextlib.contextmanager
def _broker(address: str | None) -> Iterator[str]:
    if address is not None:
        yield address
        return
    from nudgeflow.kafka.broker import LocalKafka

    click.echo("starting a local Kafka broker for the bench...", err=True)
    # The full JIT: the broker shares the two cores with the worker it measures, and C2
    # code needs about half the CPU per request of C1 (docs/performance.md, run 8).
    with LocalKafka(heap="1g", full_jit=True) as kafka:
        yield kafka.bootstrap


@click.command("bench")
@click.argument("scenarios", nargs=-1, type=click.Choice(SCENARIOS))
@click.option("--json", "as_json", is_flag=True, help="one JSON object per line per result")
@click.option("--broker", default=None, help="use this Kafka (host:port) instead of starting one")
@click.option("--partitions", type=click.IntRange(1, 64), default=4, show_default=True)
@click.option("--events", type=click.IntRange(1), default=200_000, show_default=True,
              help="throughput: events produced")  # fmt: skip
@click.option("--throughput-users", type=click.IntRange(1), default=100_000, show_default=True)
@click.option("--rates", default="1000,5000", show_default=True, help="latency: events/s")
@click.option("--latency-seconds", type=click.FloatRange(0.1), default=10.0, show_default=True)
@click.option("--webhook-rate", type=click.IntRange(1), default=200, show_default=True,
              help="latency: events/s for the trigger-to-webhook run")  # fmt: skip
@click.option("--timer-sizes", default="10000,100000,1000000", show_default=True,
              help="timers: pending timers for the fire-1000-due figure")  # fmt: skip
@click.option("--live-timers", default="10000,100000", show_default=True,
              help="timers: pending sizes also run live on a worker for lateness")  # fmt: skip
@click.option("--fire", "timers_fire", type=click.IntRange(1), default=2000, show_default=True,
              help="timers: timers falling due during a live lateness run")  # fmt: skip
@click.option("--users", type=click.IntRange(1), default=1_000_000, show_default=True,
              help="memory/recovery: users with state")  # fmt: skip
@click.option("--load", type=click.Choice(["seed", "events"]), default="seed", show_default=True,
              help="memory/recovery/live timers: how users' state gets into the worker: "
              "seed = write its changelog records (fast), events = one event per user applied "
              "by the worker (~800/s)")  # fmt: skip
@click.option("--backtest-events", type=click.IntRange(1), default=1_000_000, show_default=True)
@click.option("--backtest-workers", type=click.IntRange(1, 64), default=1, show_default=True,
              help="backtest: processes, as `nudgeflow backtest --workers N`")  # fmt: skip
@click.option("--profile", "profile_dir", type=click.Path(path_type=Path), default=None,
              help="throughput: write a 10 s py-spy profile of the worker here")  # fmt: skip
@click.option("--keep", is_flag=True, help="keep the scratch dir (worker logs, data)")
def command(
    scenarios: tuple[str, ...],
    as_json: bool,
    broker: str | None,
    partitions: int,
    events: int,
    throughput_users: int,
    rates: str,
    latency_seconds: float,
    webhook_rate: int,
    timer_sizes: str,
    live_timers: str,
    timers_fire: int,
    users: int,
    load: str,
    backtest_events: int,
    backtest_workers: int,
    profile_dir: Path | None,
    keep: bool,
) -> None:
    """Run benchmark scenarios (default: all) and print their figures."""
    chosen = scenarios or SCENARIOS
    _log_progress()
    from nudgeflow.bench import latency, state, throughput, timers

    plans: dict[str, Callable[[BenchSession], Coroutine[Any, Any, list[Result]]]] = {
        "throughput": lambda s: _one(throughput.run(s, events, throughput_users)),
        "latency": lambda s: latency.run(s, _sizes(rates), latency_seconds, webhook_rate),
        "timers": lambda s: timers.run(s, _sizes(timer_sizes), _sizes(live_timers), timers_fire),
        "memory": lambda s: _one(state.memory(s, users)),
        "recovery": lambda s: _one(state.recovery(s, users)),
    }

    def emit(result: Result) -> None:
        click.echo(result.as_json() if as_json else format_table([result]))

    live = [name for name in chosen if name in LIVE]
    if live:
        with _broker(broker) as bootstrap:
            session = BenchSession(
                bootstrap, partitions=partitions, keep=keep, profile_dir=profile_dir, load=load
            )
            try:
                for name in live:
                    for result in _guarded(name, plans[name], session):
                        emit(result)
            finally:
                session.close()
    if "backtest" in chosen:
        emit(_backtest(backtest_events, backtest_workers))


def _guarded(
    name: str,
    plan: Callable[[BenchSession], Coroutine[Any, Any, list[Result]]],
    session: BenchSession,
) -> list[Result]:
    """A failed scenario is reported as such; the others still run."""
    try:
        return asyncio.run(plan(session))
    except Exception as exc:
        logging.getLogger("nudgeflow.bench").exception("%s failed", name)
        return [Result(name, {"error": f"{type(exc).__name__}: {str(exc)[:300]}"})]


def _log_progress() -> None:
    """Progress lines on stderr, so stdout stays the table or the JSON lines."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
    bench_log = logging.getLogger("nudgeflow.bench")
    for old in list(bench_log.handlers):  # an earlier run in this process (tests)
        bench_log.removeHandler(old)
    bench_log.addHandler(handler)
    bench_log.setLevel(logging.INFO)
    bench_log.propagate = False


async def _one(result: Coroutine[Any, Any, Result]) -> list[Result]:
    return [await result]


def _backtest(events: int, workers: int = 1) -> Result:
    """Scenario 6 lives with the backtest (nudgeflow/bench/backtest.py), when present."""
    try:
        module = importlib.import_module("nudgeflow.bench.backtest")
    except ModuleNotFoundError:
        return Result("backtest", {"events": events, "events_per_s": None},
                      ["unavailable: nudgeflow.bench.backtest is not installed"])  # fmt: skip
    with contextlib.redirect_stdout(sys.stderr):  # it prints its own summary; ours is stdout
        figures: dict[str, Any] = module.run(events, json=True, workers=workers)
    figures.pop("scenario", None)
    return Result("backtest", figures)


if __name__ == "__main__":
    command(sys.argv[1:])
