"""A real single-node Apache Kafka (KRaft) broker as a child process.

Used by `nudgeflow kafka`, `nudgeflow dev` and the test suite. `start()` blocks until the
broker answers a metadata request with itself in it, not merely until the port opens.
The methods are synchronous; from async code call them with `asyncio.to_thread`.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

from aiokafka.admin import AIOKafkaAdminClient

from nudgeflow.kafka import config as kc
from nudgeflow.kafka.jars import DEFAULT_VERSION, ensure_jars, find_java

log = logging.getLogger(__name__)


CDS_ARCHIVE = "kafka.jsa"  # next to the cached libs, written by the first broker that stops


class KafkaStartError(RuntimeError):
    """The broker did not come up; the message carries the tail of its log."""


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


async def _broker_ready(bootstrap: str, timeout_s: float) -> bool:
    """True once the broker serves metadata that lists a registered broker."""
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap,
        request_timeout_ms=max(1000, int(timeout_s * 1000)),
        connections_max_idle_ms=10_000,
    )
    try:
        await asyncio.wait_for(admin.start(), timeout_s)
        cluster = await asyncio.wait_for(admin.describe_cluster(), timeout_s)
        return bool(cluster.get("brokers"))
    except Exception:
        return False
    finally:
        try:
            await asyncio.wait_for(admin.close(), timeout_s)
        except Exception:
            log.debug("admin close failed during readiness probe", exc_info=True)


def probe(bootstrap: str, timeout_s: float = 2.0) -> bool:
    """One readiness probe, on its own event loop and thread so it works from any caller."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, _broker_ready(bootstrap, timeout_s)).result()


def _port_open(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def _tail(path: Path, limit: int = 4000) -> str:
    try:
        return path.read_text(errors="replace")[-limit:]
    except OSError:
        return ""


class LocalKafka:
    """One KRaft broker+controller on 127.0.0.1; a context manager.

    `stop()` ends the broker and removes a temporary data dir; `kill()` and `restart()`
    keep the data (for fault tests: kill, then `start()` again recovers the same log).
    """

    def __init__(
        self,
        port: int | None = None,
        controller_port: int | None = None,
        data_dir: Path | None = None,
        version: str = DEFAULT_VERSION,
        heap: str = "512m",
        num_partitions: int = 4,
        full_jit: bool = False,
        cache_dir: Path | None = None,
    ) -> None:
        self.version = version
        self.cache_dir = cache_dir
        self.port = port or free_port()
        self.controller_port = controller_port or free_port()
        self.heap = heap
        self.full_jit = full_jit
        self.num_partitions = num_partitions
        self._temp = data_dir is None
        self._data_dir: Path | None = Path(data_dir) if data_dir is not None else None
        self._proc: subprocess.Popen[bytes] | None = None
        self._dumping: Path | None = None
        self.start_seconds: float | None = None

    # -- addresses -------------------------------------------------------------------------

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def data_dir(self) -> Path:
        if self._data_dir is None:
            raise RuntimeError("a temporary data dir exists only while the broker is started")
        return self._data_dir

    @property
    def config(self) -> kc.BrokerConfig:
        return kc.BrokerConfig(
            data_dir=self.data_dir,
            port=self.port,
            controller_port=self.controller_port,
            num_partitions=self.num_partitions,
            heap=self.heap,
            full_jit=self.full_jit,
        )

    @property
    def log_path(self) -> Path:
        return self.config.log_path

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    # -- lifecycle -------------------------------------------------------------------------

    def start(self, timeout: float = 60.0) -> LocalKafka:
        """Fetch jars if needed, format storage once, launch, wait until it serves."""
        if self.running:
            return self
        began = time.monotonic()
        libs = ensure_jars(self.version, self.cache_dir)
        java = find_java()
        if self._data_dir is None:
            self._data_dir = Path(tempfile.mkdtemp(prefix="nudgeflow-kafka-"))
        atexit.register(self._emergency_stop)
        cfg = self.config
        cfg.data_dir.mkdir(parents=True, exist_ok=True)
        cfg.properties_path.write_text(kc.render_properties(kc.server_properties(cfg)))
        cfg.log4j2_path.write_text(kc.log4j2_properties(cfg.log_path))
        cds = libs.parent / CDS_ARCHIVE
        if not cfg.formatted_marker.exists():
            self._format(java, libs, cds if cds.is_file() else None)
        if cds.is_file():
            self._dumping = None
            cmd = kc.server_command(java, libs, cfg, cds=cds)
        else:
            self._dumping = cds.with_name(f"{CDS_ARCHIVE}.tmp-{os.getpid()}-{id(self)}")
            cmd = kc.server_command(java, libs, cfg, dump_cds=self._dumping)
        with cfg.out_path.open("ab") as out:
            self._proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: signals reach the whole JVM
            )
        self._wait_ready(began + timeout)
        self.start_seconds = time.monotonic() - began
        log.info("Kafka %s ready at %s in %.1fs", self.version, self.bootstrap, self.start_seconds)
        return self

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM (controlled shutdown), then SIGKILL; removes a temporary data dir."""
        self._halt(timeout)
        atexit.unregister(self._emergency_stop)
        self._remove_temp_dir()

    def kill(self) -> None:
        """SIGKILL the broker, as a crash would; data stays for a later `start()`."""
        self._signal(signal.SIGKILL)
        if self._proc is not None:
            self._proc.wait()
        self._proc = None
        self._keep_cds_archive(complete=False)

    def restart(self, timeout: float = 60.0) -> LocalKafka:
        """Stop and start on the same data dir and ports."""
        self._halt()
        return self.start(timeout)

    def __enter__(self) -> LocalKafka:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- internals -------------------------------------------------------------------------

    def _remove_temp_dir(self) -> None:
        if self._temp and self._data_dir is not None:
            shutil.rmtree(self._data_dir, ignore_errors=True)
            self._data_dir = None

    def _format(self, java: str, libs: Path, cds: Path | None) -> None:
        cmd = kc.format_command(java, libs, self.config, kc.new_cluster_id(), cds)
        proc = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL)
        if proc.returncode != 0:
            raise KafkaStartError(
                f"formatting Kafka storage in {self.config.log_dir} failed "
                f"(exit {proc.returncode}):\n{(proc.stdout + proc.stderr)[-3000:]}"
            )

    def _wait_ready(self, deadline: float) -> None:
        while True:
            if self._proc is None or self._proc.poll() is not None:
                code = None if self._proc is None else self._proc.returncode
                self._proc = None
                self._keep_cds_archive(complete=False)
                raise KafkaStartError(
                    f"Kafka exited during start (exit {code}); log {self.log_path}:\n"
                    f"{_tail(self.config.out_path)}\n{_tail(self.log_path)}"
                )
            # A plain connect first: cheap, and it keeps the client from logging refusals.
            if _port_open(self.port) and probe(self.bootstrap, timeout_s=2.0):
                return
            if time.monotonic() > deadline:
                self._halt(5.0)
                raise KafkaStartError(
                    f"Kafka did not serve {self.bootstrap} in time; log {self.log_path}:\n"
                    f"{_tail(self.log_path)}"
                )
            time.sleep(0.2)

    def _signal(self, sig: signal.Signals) -> None:
        if self._proc is None or self._proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self._proc.pid, sig)

    def _halt(self, timeout: float = 30.0) -> None:
        if self._proc is None:
            return
        self._signal(signal.SIGTERM)
        graceful = True
        try:
            self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            log.warning("Kafka did not stop in %.0fs; killing it", timeout)
            graceful = False
            self._signal(signal.SIGKILL)
            self._proc.wait()
        self._proc = None
        self._keep_cds_archive(complete=graceful)

    def _keep_cds_archive(self, complete: bool) -> None:
        """Move an archive the JVM wrote at a clean exit into place (first writer wins);
        a JVM killed mid-dump leaves a partial file, which is dropped."""
        dumped, self._dumping = self._dumping, None
        if dumped is None or not dumped.is_file():
            return
        final = dumped.with_name(CDS_ARCHIVE)
        if final.exists() or not complete:
            dumped.unlink(missing_ok=True)
        else:
            dumped.replace(final)

    def _emergency_stop(self) -> None:
        """At interpreter exit never leave a broker (or a temp dir) behind."""
        if self.running:
            self._halt(10.0)
        self._remove_temp_dir()
