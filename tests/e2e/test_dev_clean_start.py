"""`nudgeflow dev` from nothing starts clean (issue 22.5): its own Kafka on an empty data
dir, new topics, the demo's first webhooks, and not one `level=error` line on the way.

CI watches until the demo's first deliveries have arrived (and a few seconds more);
NUDGEFLOW_DEV_WATCH_S=120 watches the full two minutes (docs/reliability.md).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.fixtures.workers import ARTIFACTS, free_port

WATCH_S = float(os.environ.get("NUDGEFLOW_DEV_WATCH_S", "0"))
FIRST_DELIVERIES = 3
AFTER_S = 5.0


def _wait_for(log: Path, proc: subprocess.Popen[bytes], done: float, deliveries: int) -> str:
    """Read the log until `deliveries` receiver lines and `done` (monotonic) have passed."""
    deadline = time.monotonic() + 240
    while True:
        text = log.read_text(errors="replace")
        seen = text.count("[receiver] trg_")
        if seen >= deliveries and time.monotonic() >= done:
            return text
        assert proc.poll() is None, f"nudgeflow dev exited ({proc.returncode}):\n{text[-4000:]}"
        assert time.monotonic() < deadline, f"{seen} deliveries after 240 s:\n{text[-4000:]}"
        time.sleep(0.5)


def test_dev_starts_without_an_error_line(tmp_path: Path) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    log = ARTIFACTS / f"dev-clean-start-{os.getpid()}.log"
    web_port = free_port()
    cmd = [
        sys.executable,
        "-m",
        "nudgeflow",
        "dev",
        "--data-dir",
        str(tmp_path / "dev"),
        "--web-port",
        str(web_port),
        "--kafka-port",
        str(free_port()),
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith("NUDGEFLOW_")}
    started = time.monotonic()
    with log.open("wb") as out:
        proc = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    try:
        text = _wait_for(log, proc, started + WATCH_S, FIRST_DELIVERIES)
        first = time.monotonic() - started
        time.sleep(AFTER_S)
        text = log.read_text(errors="replace")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
    errors = [line for line in text.splitlines() if "level=error" in line or "Traceback" in line]
    print(
        f"\n[dev] first {FIRST_DELIVERIES} deliveries after {first:.1f} s; watched "
        f"{time.monotonic() - started:.0f} s; {len(errors)} error lines"
    )
    assert errors == [], "\n".join(errors[:20])
    assert f"Console         : http://127.0.0.1:{web_port}/" in text
    assert re.search(r"level=info logger=nudgeflow\.cli\.demo msg=\"demo traffic: cycle 0", text)
    assert "level=warning logger=nudgeflow.cli.demo" not in text
