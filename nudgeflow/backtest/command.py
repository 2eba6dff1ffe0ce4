"""`nudgeflow backtest`: replay a JSONL event file through the live engine.

    nudgeflow backtest --config nudgeflow.yaml --events events.jsonl[.gz]
        [--until 2024-06-04T00:00:00Z] [--out triggers.jsonl]
        [--decisions decisions.jsonl] [--json]

Prints what each rule would have done (armed, fired, cancelled, suppressed
by reason, ...) and, for rules with an experiment, per-variant conversion
rates with confidence intervals, uplift and p-values.
"""

from __future__ import annotations

import os
import resource
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
import msgspec

from nudgeflow.backtest.output import ActionWriter
from nudgeflow.backtest.reader import ReadStats, read_events
from nudgeflow.backtest.report import RuleTally, Tally, experiment_summary, render_text
from nudgeflow.backtest.runner import Backtest
from nudgeflow.engine.actions import Action
from nudgeflow.engine.core import Engine, build_engine
from nudgeflow.engine.rules import Experiment
from nudgeflow.engine.timefmt import iso_utc
from nudgeflow.pipeline.config import load_config

_DEV_SECRET = b"nudgeflow-dev-secret-change-me"  # same fallback as the worker


def engine_secret() -> bytes:
    """NUDGEFLOW_SECRET, as the worker reads it, so discount codes match live."""
    secret = os.environ.get("NUDGEFLOW_SECRET")
    return secret.encode() if secret else _DEV_SECRET


def parse_time(value: str) -> int:
    """ISO 8601 (naive means UTC) or epoch milliseconds -> epoch milliseconds."""
    text = value.strip()
    if text.lstrip("-").isdigit():
        return int(text)
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise click.BadParameter(f"expected ISO 8601 time or epoch ms, got {value!r}") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return int(parsed.timestamp() * 1000)


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


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


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
    tally = Tally()
    started, cpu_started = time.perf_counter(), time.process_time()
    with ActionWriter(out, decisions, conversions) as writer:

        def sink(actions: Sequence[Action]) -> None:
            tally.add(actions)
            writer.write(actions)

        backtest = Backtest(engine, sink)
        stats = backtest.run(read_events(events, read), until_ms)
    elapsed = time.perf_counter() - started
    cpu = time.process_time() - cpu_started
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
        "users": backtest.users,
        "timer_fires": stats.timer_fires,
        "timers_pending": len(backtest.timers),
        "stuck_timers": stats.stuck_timers,
        "first_event": iso(stats.first_ts),
        "last_event": iso(stats.last_ts),
        "until": iso(stats.until),
        "triggers": tally.triggers,
        "elapsed_s": round(elapsed, 3),
        "events_per_s": round(read.events / elapsed, 1) if elapsed > 0 else 0.0,
        "cpu_s": round(cpu, 3),  # the machine may be shared: CPU time is the steadier figure
        "events_per_cpu_s": round(read.events / cpu, 1) if cpu > 0 else 0.0,
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "rules": {
            name: tally.rules.get(name, RuleTally()).as_dict()
            for name in dict.fromkeys([*engine.rules, *tally.rules])
        },
        "experiments": experiment_summary(tally, experiments_of(engine)),
    }


@click.command("backtest")
@click.option(
    "--config",
    "config_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    required=True,
    help="nudgeflow.yaml",
)
@click.option(
    "--events",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    required=True,
    help="JSON lines, one event per line (.gz accepted)",
)
@click.option("--until", default=None, help="fire timers due up to this time (default: last event)")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), help="triggers JSONL")
@click.option("--decisions", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--conversions", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="print the summary as one JSON object")
def command(
    config_path: Path,
    events: Path,
    until: str | None,
    out: Path | None,
    decisions: Path | None,
    conversions: Path | None,
    as_json: bool,
) -> None:
    """Replay EVENTS through the rules of CONFIG on a simulated clock."""
    until_ms = parse_time(until) if until is not None else None
    try:
        config = load_config(config_path)
    except (ValueError, OSError) as exc:
        raise click.ClickException(f"{config_path}: {exc}") from None
    engine = build_engine(config, secret=engine_secret())
    summary = backtest_file(
        engine, events, until_ms=until_ms, out=out, decisions=decisions, conversions=conversions
    )
    if as_json:
        click.echo(msgspec.json.encode(summary).decode())
    else:
        click.echo(render_text(summary))


if __name__ == "__main__":
    command()
