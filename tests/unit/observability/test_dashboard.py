"""The Grafana dashboard (docker/grafana/dashboards/nudgeflow.json) asks only for metrics we
export, covers what issue 6 lists, and every query is valid PromQL (`promtool check rules`).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from nudgeflow.observability.metrics import REGISTRY

DOCKER = Path(__file__).resolve().parents[3] / "docker"
DASHBOARD = DOCKER / "grafana" / "dashboards" / "nudgeflow.json"
_SUFFIXES = {
    "counter": ("_total",),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count"),
    "summary": ("", "_sum", "_count"),
    "info": ("_info",),
}
_METRIC = re.compile(r"\bnudgeflow_[a-zA-Z0-9_]+")
# Grafana's variables, replaced by what Grafana would substitute.
_GRAFANA_VARS = {"$__rate_interval": "1m", "$__range": "1h", "$__interval": "15s"}


def exported_names() -> set[str]:
    """Sample names the registry exports, by metric type (labelled metrics included even
    before their first child exists)."""
    names: set[str] = set()
    for family in REGISTRY.collect():
        names.update(family.name + suffix for suffix in _SUFFIXES[family.type])
    return names


def panels() -> list[dict]:
    out = []
    for panel in json.loads(DASHBOARD.read_text())["panels"]:
        out.append(panel)
        out.extend(panel.get("panels", []))  # collapsed rows nest theirs
    return [p for p in out if p["type"] != "row"]


def exprs() -> list[tuple[str, str]]:
    return [(p["title"], t["expr"]) for p in panels() for t in p["targets"]]


def test_every_query_names_only_exported_metrics() -> None:
    exported = exported_names()
    assert "nudgeflow_events_received_total" in exported  # the derivation itself works
    assert "nudgeflow_consumer_lag_messages" in exported
    unknown = {
        (title, name)
        for title, expr in exprs()
        for name in _METRIC.findall(expr)
        if name not in exported
    }
    assert unknown == set()
    assert all(_METRIC.search(expr) for _, expr in exprs())  # no query without our metric


def test_the_dashboard_covers_what_operators_need() -> None:
    titles = " | ".join(p["title"].lower() for p in panels())
    for topic in (
        "throughput",
        "consumer lag",
        "event-to-trigger latency",
        "decisions by outcome",
        "delivery success ratio",
        "retries and dead letters",
        "pending timers",
        "timer lateness",
        "conversion rate by variant",
    ):
        assert topic in titles
    latency = " ".join(e for t, e in exprs() if "latency" in t.lower())
    assert "histogram_quantile(0.5," in latency and "histogram_quantile(0.99," in latency
    uids = {t["datasource"]["uid"] for p in panels() for t in p["targets"]}
    provisioned = yaml.safe_load(
        (DOCKER / "grafana" / "provisioning" / "datasources" / "prometheus.yaml").read_text()
    )
    assert uids == {d["uid"] for d in provisioned["datasources"]}


def test_panels_do_not_overlap() -> None:
    cells: dict[tuple[int, int], str] = {}
    for p in json.loads(DASHBOARD.read_text())["panels"]:
        g = p["gridPos"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, (p["title"], cells.get((x, y)))
                cells[(x, y)] = p["title"]
        assert g["x"] + g["w"] <= 24


def test_every_query_is_valid_promql(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool is missing: `make install` installs Debian's prometheus package")
    rules = []
    for i, (_, expr) in enumerate(exprs()):
        for var, value in _GRAFANA_VARS.items():
            expr = expr.replace(var, value)
        rules.append({"record": f"dashboard:query_{i}", "expr": expr})
    path = tmp_path / "dashboard-rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    done = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(rules)} rules found" in done.stdout
