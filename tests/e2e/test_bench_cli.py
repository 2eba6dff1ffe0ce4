"""`nudgeflow bench --json` end to end with tiny sizes: every scenario prints its figures
under the names issue 8 fixes (the speed itself is measured by running the bench, not here)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from click.testing import CliRunner

from nudgeflow.cli.bench import command

pytestmark = pytest.mark.kafka

KEYS = {
    "throughput": {
        "events_per_s",
        "bare_faust_events_per_s",
        "raw_aiokafka_events_per_s",
        "ratio_vs_bare_faust",
        "ratio_vs_raw_aiokafka",
        "engine_events_per_s",
    },
    "latency": {
        "rate",
        "p50_ms",
        "p95_ms",
        "p99_ms",
        "webhook_p50_ms",
        "webhook_p99_ms",
        "capacity_events_per_s",
    },
    "timers": {"pending", "lateness_p50_s", "lateness_p99_s", "fire_1000_due_ms"},
    "memory": {"users", "rss_mb"},
    "recovery": {"users", "recovery_s"},
    "backtest": {"events", "events_per_s", "no_rules_events_per_s", "ratio_vs_no_rules"},
}


def run_bench(*args: str) -> list[dict[str, Any]]:
    result = CliRunner().invoke(command, [*args, "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output + result.stderr
    return [json.loads(line) for line in result.stdout.splitlines() if line.strip()]


def test_live_scenarios_print_their_figures(kafka_bootstrap: str) -> None:
    rows = run_bench(
        "throughput", "timers", "memory",
        "--broker", kafka_bootstrap,
        "--events", "200", "--throughput-users", "50",
        "--timer-sizes", "2000", "--live-timers", "",
        "--users", "200",
    )  # fmt: skip
    by_scenario = {row["scenario"]: row for row in rows}
    assert [row["scenario"] for row in rows] == ["throughput", "timers", "memory"]
    for name, row in by_scenario.items():
        assert KEYS[name] <= set(row), f"{name} lacks {KEYS[name] - set(row)}"
    tp = by_scenario["throughput"]
    assert tp["events"] == 200
    assert tp["events_per_s"] > 0 and tp["bare_faust_events_per_s"] > 0
    assert tp["engine_events_per_s"] > 0 and tp["engine_actions_per_event"] > 0
    # The ratio is computed before its two rates are rounded for printing: 0.001 apart at most.
    ratio = tp["events_per_s"] / tp["bare_faust_events_per_s"]
    assert abs(tp["ratio_vs_bare_faust"] - ratio) <= 0.0015
    assert (
        by_scenario["timers"]["pending"] == 2000 and by_scenario["timers"]["fire_1000_due_ms"] > 0
    )
    assert by_scenario["timers"]["lateness_p99_s"] is None  # not run live at this size
    assert by_scenario["memory"] == {**by_scenario["memory"], "users": 200}
    assert by_scenario["memory"]["rss_mb"] > 20
    assert by_scenario["memory"]["load"] == "seed"  # restored from the seeded changelog


def test_backtest_scenario_needs_no_broker() -> None:
    (row,) = run_bench("backtest", "--backtest-events", "2000")
    assert row["scenario"] == "backtest"
    assert KEYS["backtest"] <= set(row)
    assert row["events"] == 2000
    assert row["triggers"] > 0  # the default rules fire on the synthetic shop
    assert row["no_rules_events_per_s"] > 0
    ratio = row["events_per_s"] / row["no_rules_events_per_s"]  # from the rounded rates
    assert abs(row["ratio_vs_no_rules"] - ratio) <= 0.0015


def test_backtest_scenario_on_two_workers_fires_what_one_does() -> None:
    (one,) = run_bench("backtest", "--backtest-events", "2000")
    (two,) = run_bench("backtest", "--backtest-events", "2000", "--backtest-workers", "2")
    assert (one["workers"], two["workers"]) == (1, 2)
    assert two["events"] == one["events"] == 2000
    assert two["triggers"] == one["triggers"] > 0
