"""One backtest over one JSONL file: read, run the engine on a simulated clock, tally.

The summary it returns is the `nudgeflow backtest --json` object (cli/backtest.py prints
it); the bench calls the same function, so its figures are the command's.
"""

from __future__ import annotations

import resource
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

from nudgeflow.backtest.output import ActionWriter
from nudgeflow.backtest.reader import ReadStats, read_events
from nudgeflow.backtest.report import Tally, experiment_summary
from nudgeflow.backtest.runner import Backtest, RunStats
from nudgeflow.engine.actions import Action
from nudgeflow.engine.core import Engine
from nudgeflow.engine.rules import Experiment
from nudgeflow.engine.steps import Send
from nudgeflow.engine.timefmt import iso_utc


def iso(ms: int | None) -> str | None:
    return None if ms is None else iso_utc(ms)


def experiments_of(engine: Engine) -> dict[str, tuple[Sequence[str], str | None]]:
    """Rule name -> (variant names, control variant) for every rule with an experiment."""
    out: dict[str, tuple[Sequence[str], str | None]] = {}
    for rule in engine.rules.values():
        if rule.experiment is not None:
            out[rule.name] = (
                [v.name for v in rule.experiment.variants],
                control_variant(rule.experiment),
            )
    return out


def control_variant(experiment: Experiment) -> str | None:
    """The variant that sends nothing, else one named 'control', else none."""
    for variant in experiment.variants:
        if not variant.send:
            return variant.name
    names = [v.name for v in experiment.variants]
    return "control" if "control" in names else None


def funnel_rules(engine: Engine) -> list[str]:
    """Rules with a per-step funnel in the summary: journeys and rules of several steps."""
    return [name for name, r in engine.rules.items() if r.flow or len(r.program) > 1]


def first_sends(engine: Engine) -> dict[str, int | str]:
    """Per rule, the label of its first send step: where a run is one exposure."""
    out: dict[str, int | str] = {}
    for name, rule in engine.rules.items():
        first = next((n.label for n in rule.program if isinstance(n.action, Send)), 0)
        if first != 0:
            out[name] = first
    return out


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


@dataclass(slots=True)
class Run:
    """What one backtest saw and counted, one process or several merged."""

    read: ReadStats
    stats: RunStats
    users: int
    timers_pending: int
    tally: Tally
    elapsed: float
    cpu: float
    peak_rss_mb: float


def backtest_file(
    engine: Engine,
    events: Path,
    *,
    until_ms: int | None = None,
    out: Path | None = None,
    decisions: Path | None = None,
    conversions: Path | None = None,
) -> dict[str, Any]:
    """Run one backtest; return the summary (the `--json` object)."""
    read = ReadStats()
    tally = new_tally(engine)
    started, cpu_started = time.perf_counter(), time.process_time()
    with ActionWriter(out, decisions, conversions) as writer:

        def sink(actions: Sequence[Action]) -> None:
            tally.add(actions)
            writer.write(actions)

        backtest = Backtest(engine, sink)
        stats = backtest.run(read_events(events, read), until_ms)
    elapsed = time.perf_counter() - started
    cpu = time.process_time() - cpu_started
    run = Run(read, stats, backtest.users, len(backtest.timers), tally, elapsed, cpu, peak_rss_mb())
    return summarize(engine, events, run)


def new_tally(engine: Engine) -> Tally:
    return Tally(funnel_rules(engine), first_sends(engine))


def summarize(engine: Engine, events: Path, run: Run) -> dict[str, Any]:
    """The summary of a run (the `--json` object)."""
    read, stats, tally, elapsed, cpu = run.read, run.stats, run.tally, run.elapsed, run.cpu
    return {
        "events_file": str(events),
        "lines": read.lines,
        "events_read": read.events,
        "rejected": read.rejected_total,
        "rejected_by_reason": dict(read.rejected.most_common()),
        "rejected_samples": [msgspec.to_builtins(s) for s in read.samples],
        "events_applied": stats.events - stats.duplicates,
        "duplicates": stats.duplicates,
        "out_of_order": stats.out_of_order,
        "users": run.users,
        "timer_fires": stats.timer_fires,
        "timers_pending": run.timers_pending,
        "stuck_timers": stats.stuck_timers,
        "first_event": iso(stats.first_ts),
        "last_event": iso(stats.last_ts),
        "until": iso(stats.until),
        "triggers": tally.triggers,
        "elapsed_s": round(elapsed, 3),
        "events_per_s": round(read.events / elapsed, 1) if elapsed > 0 else 0.0,
        "cpu_s": round(cpu, 3),  # the machine may be shared: CPU time is the steadier figure
        "events_per_cpu_s": round(read.events / cpu, 1) if cpu > 0 else 0.0,
        "peak_rss_mb": round(run.peak_rss_mb, 1),
        "rules": {name: tally.rule(name) for name in dict.fromkeys([*engine.rules, *tally.rules])},
        "experiments": experiment_summary(tally, experiments_of(engine)),
        "funnel": {
            name: tally.funnel.rule(name, engine.rules[name].program)
            for name in funnel_rules(engine)
        },
    }
