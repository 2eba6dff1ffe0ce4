"""Figures and their printing: the JSON lines are the bench's public contract."""

from __future__ import annotations

import json

from nudgeflow.bench.results import Result, format_table, percentile, ratio, rounded


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]  # 1..100
    assert percentile(values, 50) == 50.0
    assert percentile(values, 95) == 95.0
    assert percentile(values, 99) == 99.0
    assert percentile(values, 100) == 100.0
    assert percentile([7.0], 99) == 7.0
    assert percentile(list(reversed(values)), 50) == 50.0  # order of samples does not matter


def test_percentile_of_nothing_is_none() -> None:
    assert percentile([], 50) is None


def test_ratio_and_rounding_leave_missing_figures_missing() -> None:
    assert ratio(50.0, 200.0) == 0.25
    assert ratio(None, 200.0) is None
    assert ratio(50.0, 0.0) is None
    assert rounded(None) is None
    assert rounded(1.26, 1) == 1.3


def test_json_line_has_the_scenario_first_then_the_figures() -> None:
    line = Result("latency", {"rate": 1000, "p99_ms": 7.5, "webhook_p99_ms": None}).as_json()
    assert json.loads(line) == {
        "scenario": "latency",
        "rate": 1000,
        "p99_ms": 7.5,
        "webhook_p99_ms": None,
    }
    assert line.startswith('{"scenario": "latency"')
    assert "\n" not in line


def test_table_names_every_figure_and_note() -> None:
    text = format_table(
        [
            Result("memory", {"users": 1_000_000, "rss_mb": 512.25}),
            Result("backtest", {"events_per_s": None}, ["unavailable: not installed"]),
        ]
    )
    lines = text.splitlines()
    assert lines[0].startswith("memory")
    assert "users=1,000,000" in lines[0] and "rss_mb=512.2" in lines[0]
    assert "events_per_s=-" in lines[1]
    assert lines[2].strip() == "note: unavailable: not installed"
