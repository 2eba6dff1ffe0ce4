"""A real `nudgeflow worker` subprocess the live scenarios measure from outside.

Outside, because that is how it runs in production: the bench reads its
Prometheus metrics, its RSS from /proc, and kills it with SIGKILL.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from nudgeflow.kafka.broker import free_port


class WorkerFailed(RuntimeError):
    """The worker exited or did not become ready; the message carries its log tail."""


@dataclass
class BenchWorker:
    config: Path
    broker: str
    prefix: str
    data_dir: Path
    log_dir: Path
    roles: tuple[str, ...] = ("evaluate",)
    partitions: int = 4
    env: Mapping[str, str] = field(default_factory=dict)
    web_port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.web_port}"

    @property
    def log_path(self) -> Path:
        return self.log_dir / f"worker-{self.prefix}.log"

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise WorkerFailed("worker not started")
        return self.proc.pid

    def start(self) -> BenchWorker:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        env = {
            **os.environ,
            "NUDGEFLOW_APP_ID": self.prefix,
            "NUDGEFLOW_ROLES": ",".join(self.roles),
            **self.env,
        }
        cmd = [
            sys.executable, "-m", "nudgeflow", "worker",
            "--config", str(self.config),
            "--broker", self.broker,
            "--web-port", str(self.web_port),
            "--data-dir", str(self.data_dir),
            "--topic-prefix", self.prefix,
            "--partitions", str(self.partitions),
            "--log-level", "warning",
        ]  # fmt: skip
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )
        return self

    def is_ready(self) -> bool:
        try:
            with urllib.request.urlopen(self.url + "/ready", timeout=2) as resp:
                return bool(resp.status == 200)
        except (OSError, urllib.error.URLError):
            return False

    def wait_ready(self, timeout: float = 180.0, poll: float = 0.1) -> float:
        """Block until /ready answers 200; returns the seconds waited."""
        began = time.monotonic()
        while time.monotonic() - began < timeout:
            self._check_alive()
            if self.is_ready():
                return time.monotonic() - began
            time.sleep(poll)
        raise WorkerFailed(f"worker not ready after {timeout:.0f}s:\n{self.tail()}")

    def metric(self, name: str) -> float:
        """Sum of every sample called `name` (all label sets) in /metrics."""
        self._check_alive()
        query = urllib.parse.urlencode({"name[]": name})  # only that sample: cheap to poll
        with urllib.request.urlopen(f"{self.url}/metrics?{query}", timeout=5) as resp:
            text = resp.read().decode()
        total = 0.0
        for family in text_string_to_metric_families(text):
            total += sum(s.value for s in family.samples if s.name == name)
        return total

    def rss_mb(self) -> float:
        """VmRSS of the worker process, from /proc (Linux)."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise WorkerFailed("no VmRSS in /proc status")

    def cpu_s(self) -> float:
        """User + system CPU seconds the worker has used (all threads), from /proc."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def kill(self) -> None:
        """kill -9, as a crash."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()

    def tail(self, limit: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-limit:]
        except OSError:
            return ""

    def _check_alive(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            code = None if self.proc is None else self.proc.returncode
            raise WorkerFailed(f"worker exited ({code}):\n{self.tail()}")


def wait_for_metric(
    worker: BenchWorker, name: str, at_least: float, timeout: float, poll: float = 0.2
) -> float:
    """Poll until the metric reaches `at_least`; returns its last value."""
    deadline = time.monotonic() + timeout
    value = 0.0
    while time.monotonic() < deadline:
        value = worker.metric(name)
        if value >= at_least:
            return value
        time.sleep(poll)
    raise WorkerFailed(f"{name} stayed at {value:.0f} < {at_least:.0f} for {timeout:.0f}s")
