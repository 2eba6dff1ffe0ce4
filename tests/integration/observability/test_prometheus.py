"""A real Prometheus (Debian's `prometheus` package) scrapes a live worker under traffic;
`promtool check metrics` lints what the worker exports (issue 6, items 1 and 2).

The binaries are installed by `make install` (APT_PACKAGES): a missing one fails the test
with that instruction, it never skips.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import aiohttp
import pytest

from tests.fixtures.workers import ARTIFACTS
from tests.integration.observability.conftest import USERS, Observed, event, post

pytestmark = pytest.mark.kafka

# Every metric family issue 6 names, plus Faust's own sensors: each must be in Prometheus.
KEY_SERIES = [
    "nudgeflow_build_info",
    "nudgeflow_events_received_total",
    "nudgeflow_events_rejected_total",
    "nudgeflow_decisions_total",
    "nudgeflow_timers_pending",
    "nudgeflow_timer_lateness_seconds_count",
    "nudgeflow_event_to_trigger_seconds_bucket",
    "nudgeflow_triggers_total",
    "nudgeflow_deliveries_total",
    "nudgeflow_delivery_attempts_total",
    "nudgeflow_delivery_attempt_duration_seconds_count",
    "nudgeflow_delivery_retries_total",
    "nudgeflow_dead_letters_total",
    "nudgeflow_circuit_breaker_state",
    "nudgeflow_experiment_exposures_total",
    "nudgeflow_experiment_conversions_total",
    "nudgeflow_consumer_lag_messages",
    "nudgeflow_gc_frozen_objects",
    "nudgeflow_faust_messages_received_total",
    "nudgeflow_faust_event_processing_seconds_count",
    "nudgeflow_faust_send_seconds_count",
    "nudgeflow_faust_table_operations_total",
]


def binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(
            f"`{name}` is not installed: it comes with Debian's `prometheus` package "
            "(`make install` installs it, or `apt-get install -y prometheus`)"
        )
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def prometheus(observed: Observed, tmp_path: Path) -> Iterator[str]:
    """A Prometheus server of our own (not the system service), scraping the worker every 1 s."""
    exe = binary("prometheus")
    target = urlparse(observed.worker.url).netloc
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        "scrape_configs:\n"
        "  - job_name: nudgeflow\n"
        f"    static_configs: [{{targets: ['{target}']}}]\n"
    )
    subprocess.run([binary("promtool"), "check", "config", str(config)], check=True)
    port = _free_port()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    log = (ARTIFACTS / "prometheus.log").open("ab")
    proc = subprocess.Popen(
        [
            exe,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


async def _query(session: aiohttp.ClientSession, base: str, promql: str) -> list[dict]:
    async with session.get(base + "/api/v1/query", params={"query": promql}) as resp:
        body = await resp.json()
    assert body["status"] == "success", body
    return body["data"]["result"]


async def _wait_ready(session: aiohttp.ClientSession, base: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            async with session.get(base + "/-/ready") as resp:
                if resp.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.3)
    raise TimeoutError("prometheus did not become ready")


def _show(series: dict) -> str:
    labels = {k: v for k, v in series["metric"].items() if k not in ("__name__", "instance")}
    inner = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    return f"{series['metric']['__name__']}{{{inner}}} {series['value'][1]}"


async def test_real_prometheus_scrapes_every_key_series(observed: Observed, prometheus: str):
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        await _wait_ready(session, prometheus)
        found: dict[str, list[dict]] = {}
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            for name in KEY_SERIES:
                if name not in found:
                    result = await _query(session, prometheus, f'{{__name__="{name}"}}')
                    if result:
                        found[name] = result
            if len(found) == len(KEY_SERIES):
                break
            await asyncio.sleep(1)

        print("\nSeries found in Prometheus (via /api/v1/query):")
        for name in KEY_SERIES:
            rows = found.get(name, [])
            print(f"  {name}: {len(rows)} series")
            for row in sorted(rows, key=_show)[:6]:
                print(f"      {_show(row)}")
        assert sorted(set(KEY_SERIES) - set(found)) == []

        up = await _query(session, prometheus, 'up{job="nudgeflow"}')
        assert [r["value"][1] for r in up] == ["1"]

        def value(promql_rows: list[dict]) -> float:
            return sum(float(r["value"][1]) for r in promql_rows)

        q = lambda promql: _query(session, prometheus, promql)  # noqa: E731
        # What the traffic did, as Prometheus stored it.
        assert value(await q('nudgeflow_events_rejected_total{source="http"}')) >= 1
        good = 'nudgeflow_deliveries_total{destination="good",outcome="delivered"}'
        assert value(await q(good)) >= len(USERS)
        assert value(await q('nudgeflow_deliveries_total{destination="flaky",outcome="dead"}')) >= 1
        assert value(await q('nudgeflow_delivery_attempts_total{status_class="5xx"}')) >= 1
        assert value(await q('nudgeflow_decisions_total{rule="ping",outcome="fired"}')) >= len(
            USERS
        )
        exposures = await q("sum by (variant) (nudgeflow_experiment_exposures_total)")
        assert value(exposures) >= len(USERS)
        assert {r["metric"]["variant"] for r in exposures} <= {"fast", "control"}

        # Pending timers: each user is left with exactly the one-hour `long_wait` timer.
        pending = 0.0
        while time.monotonic() < deadline + 60:
            pending = value(await q("nudgeflow_timers_pending"))
            if pending == len(USERS):
                break
            await asyncio.sleep(1)
        assert pending == len(USERS)

        # The dashboard's latency queries answer with numbers once there is a rate: more
        # pings while Prometheus watches.
        for _ in range(5):
            await post(observed, [event(u, "ping") for u in USERS])
            await asyncio.sleep(1)
        for quantile in ("0.5", "0.99"):
            promql = (
                f"histogram_quantile({quantile}, sum by (le) "
                "(rate(nudgeflow_event_to_trigger_seconds_bucket[30s])))"
            )
            latency = float("nan")
            until = time.monotonic() + 30
            while time.monotonic() < until and not latency > 0:
                rows = await q(promql)
                latency = float(rows[0]["value"][1]) if rows else float("nan")
                await asyncio.sleep(1)
            print(f"  {promql} = {latency:.4f} s")
            assert latency > 0


async def test_promtool_check_metrics_is_clean(observed: Observed):
    async with (
        aiohttp.ClientSession() as session,
        session.get(observed.worker.url + "/metrics") as resp,
    ):
        text = await resp.text()
    done = subprocess.run(
        [binary("promtool"), "check", "metrics"],
        input=text.encode(),
        capture_output=True,
        check=False,
    )
    output = (done.stdout + done.stderr).decode()
    families = sum(1 for line in text.splitlines() if line.startswith("# TYPE "))
    print(f"\n$ curl {observed.worker.url}/metrics | promtool check metrics")
    print(f"({families} metric families, {len(text)} bytes) exit={done.returncode}")
    print(output or "(no output: clean)")
    assert (done.returncode, output) == (0, "")


async def test_every_dashboard_panel_gets_data_from_prometheus(observed: Observed, prometheus: str):
    from tests.unit.observability.test_dashboard import panels

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        await _wait_ready(session, prometheus)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # rates need a few scrapes, and traffic
            await post(observed, [event(u, "ping") for u in USERS])
            rows = await _query(session, prometheus, 'count_over_time(up{job="nudgeflow"}[1m])')
            if rows and float(rows[0]["value"][1]) >= 5:
                break
            await asyncio.sleep(1)
        await asyncio.sleep(3)  # the last pings' dead letters (3 attempts) are scraped
        print("\nDashboard panels evaluated by Prometheus (series returned per query):")
        empty = []
        for panel in panels():
            counts = []
            for target in panel["targets"]:
                expr = target["expr"].replace("$__rate_interval", "30s")
                counts.append(
                    len(await _query(session, prometheus, expr.replace("$__range", "5m")))
                )
            print(f"  {panel['title']}: {counts}")
            if not any(counts):
                empty.append(panel["title"])
        assert empty == []
        ratio_panel = next(p for p in panels() if p["title"] == "Delivery success ratio")
        expr = ratio_panel["targets"][0]["expr"]
        ratio = {
            r["metric"]["destination"]: float(r["value"][1])
            for r in await _query(session, prometheus, expr)
        }
        print(f"  delivery success ratio now: {ratio}")
        assert ratio == {"good": 1.0, "flaky": 0.0}
