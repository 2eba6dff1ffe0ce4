"""Bench scenario 6: `nudgeflow backtest` throughput on a synthetic shop workload.

The events file is generated once per size (seeded, so every run replays the
same events) and cached in the temp directory; the run uses the five default
rules, exactly what `nudgeflow backtest --config <defaults>` does, and reports
wall-clock and CPU-time rates (the machine is shared; CPU time is steadier).

Its floor is measured in the same run: the same file through the same backtest
with no rules (reading, parsing, each user's state and history, the runner),
`no_rules_events_per_s`. The rules' own cost is what lies between the two.

`workers` > 1 runs the rules as `nudgeflow backtest --workers N` does (backtest/parallel.py,
users split over N processes); its CPU time is all the processes' together, and
`critical_path_cpu_s` the slowest worker's plus the parent's (the wall time the run would
take on idle cores; the shared machine's wall clock says little). The floor stays one
process.

    python -m nudgeflow.bench.backtest 1000000 --json [--workers 2]
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
from pathlib import Path
from typing import Any

import msgspec

from nudgeflow.backtest.file import backtest_file
from nudgeflow.backtest.parallel import backtest_parallel
from nudgeflow.backtest.synthetic import ShopSpec, shop_workload, write_jsonl
from nudgeflow.bench.results import ratio
from nudgeflow.config.build import build_engine, engine_secret
from nudgeflow.config.loader import load_config

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "defaults" / "nudgeflow.yaml"


def events_file(events: int, directory: Path | None = None) -> Path:
    """The cached synthetic file for this size (about 160 bytes per event)."""
    folder = directory or Path(tempfile.gettempdir())
    path = folder / f"nudgeflow-bench-backtest-{events}.jsonl"
    if not path.exists():
        spec = ShopSpec(users=max(1, events // 10), events=events, span_ms=9 * 86_400_000)
        partial = path.with_suffix(".partial")
        write_jsonl(partial, shop_workload(spec))
        partial.rename(path)  # never leave a half-written file under the cached name
    return path


def run(events: int = 1_000_000, *, json: bool = False, workers: int = 1) -> dict[str, Any]:
    """Run the backtest over `events` synthetic events; return (and print) the figures."""
    path = events_file(events)
    config = load_config(DEFAULT_CONFIG)
    floor = backtest_file(
        build_engine(dataclasses.replace(config, rules=()), secret=engine_secret()), path
    )
    engine = build_engine(config, secret=engine_secret())
    started = time.perf_counter()
    summary = backtest_parallel(engine, path, workers=workers)
    parts = summary.get("worker_cpu_s", [summary["cpu_s"]])
    critical = max(parts) + summary["cpu_s"] - sum(parts)
    result: dict[str, Any] = {
        "scenario": "backtest",
        "workers": workers,
        "events": summary["events_read"],
        "events_per_s": summary["events_per_s"],
        "events_per_cpu_s": summary["events_per_cpu_s"],
        "cpu_s": summary["cpu_s"],
        "rss_mb": summary["peak_rss_mb"],
        "elapsed_s": round(time.perf_counter() - started, 3),
        "triggers": summary["triggers"],
        "timer_fires": summary["timer_fires"],
        # on idle cores a run takes its slowest worker's CPU time plus the parent's merge
        "critical_path_cpu_s": round(critical, 3),
        "events_per_critical_cpu_s": round(summary["events_read"] / critical, 1),
        "no_rules_events_per_s": floor["events_per_s"],
        "no_rules_events_per_cpu_s": floor["events_per_cpu_s"],
        "ratio_vs_no_rules": ratio(summary["events_per_s"], floor["events_per_s"]),
    }
    if json:
        print(msgspec.json.encode(result).decode())
    else:
        print(
            f"backtest: {result['events']:,} events, {workers} process(es), "
            f"{result['events_per_s']:,.0f} events/s "
            f"wall, {result['events_per_cpu_s']:,.0f} events/CPU-s, "
            f"peak RSS {result['rss_mb']:.0f} MB; with no rules "
            f"{result['no_rules_events_per_s']:,.0f} events/s"
        )
    return result


if __name__ == "__main__":
    import sys

    args = sys.argv[1:]
    workers = int(args[args.index("--workers") + 1]) if "--workers" in args else 1
    size = int(args[0]) if args and args[0].isdigit() else 1_000_000
    run(size, json="--json" in args, workers=workers)
