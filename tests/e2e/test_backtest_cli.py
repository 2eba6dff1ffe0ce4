"""`nudgeflow backtest` end to end: generated files in, trigger files and summaries out."""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from nudgeflow.backtest.synthetic import ShopSpec, experiment_workload, shop_workload, write_jsonl
from nudgeflow.cli.backtest import command
from nudgeflow.config.loader import DEFAULT_CONFIG, load_config_text
from nudgeflow.engine.experiments import assign_variant


def run_cli(*args: str) -> dict[str, Any]:
    result = CliRunner().invoke(command, [*args, "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    summary: dict[str, Any] = json.loads(result.output)
    return summary


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_default_rules_over_a_generated_shop_day(tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl.gz"
    records = list(shop_workload(ShopSpec(users=300, events=6_000, seed=7)))
    write_jsonl(events, records)
    out, decisions = tmp_path / "triggers.jsonl", tmp_path / "decisions.jsonl"
    summary = run_cli(
        "--config", str(DEFAULT_CONFIG), "--events", str(events),
        "--out", str(out), "--decisions", str(decisions), "--until", "2024-06-20T00:00:00Z",
    )  # fmt: skip
    triggers = read_jsonl(out)
    assert summary["events_read"] == 6_000
    assert summary["rejected"] == 0
    assert summary["triggers"] == len(triggers) > 0
    assert summary["events_per_s"] > 0
    assert summary["until"] == "2024-06-20T00:00:00.000Z"
    fired = Counter(t["rule"] for t in triggers)
    assert {name: r["fired"] for name, r in summary["rules"].items() if r["fired"]} == fired
    # each signup ran the whole 3-step welcome series by the 20th (nothing cancels it):
    # every step either fired or was suppressed (by the global cap)
    signups = sum(1 for r in records if r["type"] == "signup")
    welcome = summary["rules"]["welcome_series"]
    assert welcome["fired"] + welcome["suppressed_total"] == 3 * signups
    assert len({t["trigger_id"] for t in triggers}) == len(triggers)
    assert all(t["deadline"] <= t["fired_at"] for t in triggers)
    logged = Counter(d["outcome"] for d in read_jsonl(decisions))
    assert logged["fired"] == len(triggers)
    assert logged["cancelled"] == sum(r["cancelled"] for r in summary["rules"].values())


EXPERIMENT = """
rules:
  - name: cart_reminder
    trigger: cart_add
    delay: 1h
    cancel_on: [purchase]
    experiment:
      variants:
        control: {weight: 50, send: false}
        reminder: {weight: 50}
      conversion: {event: purchase, within: 3d}
"""


def test_synthetic_experiment_reports_uplift_and_p_value(tmp_path: Path) -> None:
    config_path = tmp_path / "nudgeflow.yaml"
    config_path.write_text(EXPERIMENT)
    [rule] = load_config_text(EXPERIMENT, base_dir=tmp_path).rules
    assert rule.experiment is not None
    weights = rule.experiment.weights
    name = rule.experiment.name

    def variant_of(uid: str) -> str:
        return assign_variant(uid, rule.name, name, weights)

    rates = {"control": 0.10, "reminder": 0.12}
    events = tmp_path / "experiment.jsonl"
    write_jsonl(
        events,
        experiment_workload(
            users=16_000, rates=rates, variant_of=variant_of, convert_after_ms=2 * 3_600_000
        ),
    )
    out, conversions = tmp_path / "triggers.jsonl", tmp_path / "conversions.jsonl"
    summary = run_cli(
        "--config", str(config_path), "--events", str(events),
        "--out", str(out), "--conversions", str(conversions),
    )  # fmt: skip
    experiment = summary["experiments"]["cart_reminder"]
    assert experiment["control"] == "control"
    results = {v["variant"]: v for v in experiment["variants"]}

    # the direct calculation, from the written records
    exposures = Counter(t["variant"] for t in read_jsonl(out))
    converted = Counter(c["variant"] for c in read_jsonl(conversions) if c["kind"] == "conversion")
    assert sum(exposures.values()) == 16_000
    for variant in rates:
        assert results[variant]["exposures"] == exposures[variant]
        assert results[variant]["converted"] == converted[variant]
        assert abs(converted[variant] / exposures[variant] - rates[variant]) < 0.015
    assert results["control"]["sent"] == 0
    assert results["reminder"]["sent"] == exposures["reminder"]
    n1, x1 = exposures["reminder"], converted["reminder"]
    n0, x0 = exposures["control"], converted["control"]
    pooled = (x0 + x1) / (n0 + n1)
    z = (x1 / n1 - x0 / n0) / math.sqrt(pooled * (1 - pooled) * (1 / n0 + 1 / n1))
    p_value = math.erfc(abs(z) / math.sqrt(2))
    reminder = results["reminder"]
    assert math.isclose(reminder["uplift_abs"], x1 / n1 - x0 / n0, rel_tol=1e-9)
    assert math.isclose(reminder["p_value"], p_value, rel_tol=1e-6)
    assert 0.005 < reminder["uplift_abs"] < 0.035  # the true uplift is 2 points
    assert reminder["p_value"] < 0.05
    low, high = reminder["ci_low"], reminder["ci_high"]
    assert low < x1 / n1 < high
