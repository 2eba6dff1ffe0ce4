"""`nudgeflow backtest --workers N`: the files and the summary are one process's, byte for byte."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from nudgeflow.backtest import parallel
from nudgeflow.backtest.parallel import owner
from nudgeflow.backtest.synthetic import DAY_MS, ShopSpec, shop_workload, write_jsonl
from nudgeflow.cli.backtest import command
from nudgeflow.config.build import build_engine, engine_secret
from nudgeflow.config.loader import load_config

DEFAULTS = Path(__file__).resolve().parents[3] / "nudgeflow" / "defaults" / "nudgeflow.yaml"
TIMING = ("elapsed_s", "events_per_s", "cpu_s", "events_per_cpu_s", "peak_rss_mb")
PARALLEL_TIMING = "worker_cpu_s"  # only with --workers > 1: each worker's CPU seconds

BANDIT = """
rules:
  - name: winback
    trigger: cart_add
    delay: 1h
    experiment:
      allocation: bandit
      variants: {a: {weight: 50}, b: {weight: 50}}
"""


def _events(tmp_path: Path) -> Path:
    """A shop history with what a real file has: out-of-order events, a replayed event
    (same event_id), a bad line and a blank line."""
    spec = ShopSpec(users=300, events=4_000, span_ms=2 * DAY_MS, seed=11, out_of_order=0.05)
    path = tmp_path / "events.jsonl"
    write_jsonl(path, shop_workload(spec))
    lines = path.read_bytes().splitlines(keepends=True)
    lines.insert(2_000, lines[1_500])  # a duplicate
    lines.insert(2_500, b'{"user_id": "u1", "type": "x"}\n')  # no ts: rejected
    lines.insert(3_000, b"\n")
    path.write_bytes(b"".join(lines))
    return path


def _run(tmp_path: Path, events: Path, workers: int, *extra: str) -> tuple[dict[str, Any], dict]:
    out = tmp_path / f"w{workers}"
    out.mkdir()
    args = ["--config", str(DEFAULTS), "--events", str(events), "--workers", str(workers)]
    args += ["--out", str(out / "t"), "--decisions", str(out / "d")]
    args += ["--conversions", str(out / "c"), "--json", *extra]
    result = CliRunner().invoke(command, args)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    for key in TIMING:
        summary.pop(key)
    assert len(summary.pop(PARALLEL_TIMING, [0] * workers)) == workers
    return summary, {name: (out / name).read_bytes() for name in ("t", "d", "c")}


def test_two_and_three_workers_write_what_one_process_writes(tmp_path: Path) -> None:
    events = _events(tmp_path)
    until = ("--until", "2024-06-06T00:00:00Z")  # past the last event: the finish fires too
    one, one_files = _run(tmp_path, events, 1, *until)
    assert one["duplicates"] == 1 and one["rejected"] == 1 and one["out_of_order"] > 0
    assert one["triggers"] > 100 and one["timer_fires"] > 100
    assert all(one_files[name] for name in ("t", "d", "c"))  # every kind has records
    assert one["experiments"]  # the default config's experiment: per-variant figures
    for workers in (2, 3):
        summary, files = _run(tmp_path, events, workers, *until)
        assert summary == one
        assert json.dumps(summary) == json.dumps(one)  # key order too
        for name in ("t", "d", "c"):
            assert files[name] == one_files[name], (workers, name)


def test_users_are_spread_over_the_workers() -> None:
    parts = [owner(f"u{n:07d}", 2) for n in range(1_000)]
    assert 400 < parts.count(0) < 600
    assert owner("u0000042", 2) == owner("u0000042", 2)


def test_a_bandit_rule_refuses_several_workers(tmp_path: Path) -> None:
    config = tmp_path / "bandit.yaml"
    config.write_text(BANDIT)
    events = tmp_path / "e.jsonl"
    events.write_text('{"user_id": "ana", "type": "cart_add", "ts": 1717372800000}\n')
    args = ["--config", str(config), "--events", str(events)]
    refused = CliRunner().invoke(command, [*args, "--workers", "2"])
    assert refused.exit_code == 2
    assert "'winback' has allocation: bandit" in refused.output
    assert "--workers 1" in refused.output
    assert CliRunner().invoke(command, [*args, "--workers", "1"]).exit_code == 0


def test_workers_do_not_go_with_compare(tmp_path: Path) -> None:
    events = tmp_path / "e.jsonl"
    events.write_text('{"user_id": "ana", "type": "cart_add", "ts": 1717372800000}\n')
    args = ["--config", str(DEFAULTS), "--events", str(events), "--compare", str(DEFAULTS)]
    result = CliRunner().invoke(command, [*args, "--workers", "2"])
    assert result.exit_code == 2
    assert "--workers" in result.output


def test_a_worker_that_fails_fails_the_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def crash(*args: object) -> None:
        raise RuntimeError("worker crashed")

    monkeypatch.setattr(parallel, "_work", crash)  # the forked workers inherit it
    events = tmp_path / "e.jsonl"
    events.write_text('{"user_id": "ana", "type": "cart_add", "ts": 1717372800000}\n')
    engine = build_engine(load_config(DEFAULTS), secret=engine_secret(warn=False))
    with pytest.raises(RuntimeError, match=r"worker 0 \(exit code 1\), 1 \(exit code 1\) failed"):
        parallel.backtest_parallel(engine, events, workers=2, out=tmp_path / "t")
