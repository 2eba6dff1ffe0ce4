"""HTTP that survives slow and many clients (issue 21 item 3).

Found: 500 connections sending a header line every 5 s were all still open after
60 s; with the worker under `ulimit -n 1024`, 1,100 of them made `/health` and
`POST /events` time out, and asyncio logged 225,231 `socket.accept() out of system
resource` tracebacks in 90 s.

Here, scaled to seconds: a worker under RLIMIT_NOFILE 1024 (header/idle deadline
2 s) and 1,100 slow-header connections from 127.0.0.2 that reconnect whenever they
are dropped, for FLOOD_S (slowloris.py, in its own process). Meanwhile a bystander
on 127.0.0.1 probes `/health` and `/ready` on fresh connections and posts events.
The attacker's own address is capped
(503 + Retry-After for a request beyond the per-client cap), no attacking connection
outlives the deadline by much, and accept errors, if any, are logged a few times, not
per attempt.
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from unittest import mock

import aiohttp
import pytest

from tests.faults.conftest import report
from tests.faults.hostile.conftest import hostile_config
from tests.fixtures.workers import WorkerProcess

pytestmark = [pytest.mark.kafka, pytest.mark.load]

NOFILE = 1024
ATTACKERS = 1100
FLOOD_S = 8.0
DEADLINE_S = 2.0  # the worker's header/idle deadline in this test
PER_CLIENT = 100
STARVED_MS = 250  # a p95 past this: the flood is starving the bystander
ATTACKER_ADDR = "127.0.0.2"
BYSTANDER_ADDR = "127.0.0.1"


@contextmanager
def lowered_nofile(limit: int) -> Iterator[None]:
    """Workers started inside get RLIMIT_NOFILE = `limit` (as `ulimit -n` would)."""
    real = subprocess.Popen

    def limit_fds() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))

    def popen(*args: Any, **kw: Any) -> Any:
        return real(*args, preexec_fn=limit_fds, **kw)

    with mock.patch.object(subprocess, "Popen", popen):
        yield


@pytest.fixture(scope="module")
async def small_worker(
    kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[WorkerProcess]:
    root = tmp_path_factory.mktemp("flood")
    tag = f"flood-{int(time.time() * 1000) % 10**8}"
    worker = WorkerProcess(
        config=hostile_config(root / "flood.yaml"),
        broker=kafka_bootstrap,
        data_dir=root / "worker",
        prefix=tag,
        app_id=tag,
        env={
            "NUDGEFLOW_HTTP_IDLE_TIMEOUT_S": str(DEADLINE_S),
            "NUDGEFLOW_HTTP_BODY_TIMEOUT_S": str(DEADLINE_S),
            "NUDGEFLOW_HTTP_MAX_CONNECTIONS_PER_CLIENT": str(PER_CLIENT),
        },
    )
    with lowered_nofile(NOFILE):
        worker.start()
    try:
        await asyncio.to_thread(worker.wait_ready, 120.0)
        yield worker
    finally:
        await asyncio.to_thread(worker.stop)


@dataclass
class Probe:
    latencies_ms: list[float] = field(default_factory=list)
    connect_ms: list[float] = field(default_factory=list)  # of which: the TCP handshake
    failures: list[str] = field(default_factory=list)


async def get_probe(port: int, path: str, stop: asyncio.Event) -> Probe:
    """GET `path` on a fresh connection every 100 ms from the bystander's address, timing
    the handshake apart (a full listen queue shows as a 1 s SYN retransmit there)."""
    result = Probe()
    request = f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()
    while not stop.is_set():
        began = time.perf_counter()
        try:
            async with asyncio.timeout(3):
                reader, writer = await asyncio.open_connection(
                    "127.0.0.1", port, local_addr=(BYSTANDER_ADDR, 0)
                )
                connected = time.perf_counter()
                writer.write(request)
                status = (await reader.readline()).split(b" ")[1:2]
                writer.close()
            if status != [b"200"]:
                result.failures.append(repr(status))
            else:
                result.latencies_ms.append((time.perf_counter() - began) * 1000)
                result.connect_ms.append((connected - began) * 1000)
        except (OSError, TimeoutError) as exc:
            result.failures.append(type(exc).__name__)
        await asyncio.sleep(0.1)
    return result


async def post_probe(url: str, stop: asyncio.Event, events: list[dict[str, Any]]) -> Probe:
    """POST /events on a fresh connection every 100 ms from the bystander's address."""
    result = Probe()
    while not stop.is_set():
        connector = aiohttp.TCPConnector(local_addr=(BYSTANDER_ADDR, 0), force_close=True)
        timeout = aiohttp.ClientTimeout(total=3)
        began = time.perf_counter()
        try:
            async with (
                aiohttp.ClientSession(connector=connector, timeout=timeout) as s,
                s.post(url, json=events) as resp,
            ):
                await resp.read()
                if resp.status != 202:
                    result.failures.append(f"{resp.status}")
                else:
                    result.latencies_ms.append((time.perf_counter() - began) * 1000)
        except (aiohttp.ClientError, TimeoutError) as exc:
            result.failures.append(type(exc).__name__)
        await asyncio.sleep(0.1)
    return result


async def _attacker_post(port: int) -> tuple[int | str, str | None]:
    """A complete POST /events from the attacker's address, past its per-client cap."""
    connector = aiohttp.TCPConnector(local_addr=(ATTACKER_ADDR, 0), force_close=True)
    event = {"user_id": "attacker", "type": "ping", "ts": int(time.time() * 1000)}
    try:
        async with (
            aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=5)) as s,
            s.post(f"http://127.0.0.1:{port}/events", json=event) as resp,
        ):
            return resp.status, resp.headers.get("Retry-After")
    except (aiohttp.ClientError, TimeoutError) as exc:
        return type(exc).__name__, None


def _summary(p: Probe) -> dict[str, Any]:
    lat = sorted(p.latencies_ms)
    return {
        "answered": len(lat),
        "failed": len(p.failures),
        "p50_ms": round(statistics.median(lat), 1) if lat else None,
        "p95_ms": round(lat[int(len(lat) * 0.95)], 1) if lat else None,
        "max_ms": round(lat[-1], 1) if lat else None,
        "max_connect_ms": round(max(p.connect_ms), 1) if p.connect_ms else None,
        "over_100ms": [round(x) for x in p.latencies_ms if x > 100],
    }


def _cpu_s(worker: WorkerProcess) -> float:
    """CPU seconds (user + system) the worker process has used so far."""
    assert worker.proc is not None
    fields = Path(f"/proc/{worker.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _flood(port: int) -> asyncio.subprocess.Process:
    """The attacker: tests/faults/hostile/slowloris.py in its own process."""
    cmd = ["-m", "tests.faults.hostile.slowloris", str(port), ATTACKER_ADDR, str(ATTACKERS)]
    return await asyncio.create_subprocess_exec(
        sys.executable, *cmd, str(FLOOD_S + 1.0), stdout=asyncio.subprocess.PIPE
    )


async def test_a_slow_header_flood_past_the_fd_limit_leaves_the_worker_answering(
    small_worker: WorkerProcess,
) -> None:
    worker = small_worker
    log_before = len(worker.tail(10**9))
    stop = asyncio.Event()
    event = {"user_id": "bystander", "type": "ping", "ts": int(time.time() * 1000)}
    quiet = asyncio.Event()
    calm = asyncio.create_task(get_probe(worker.web_port, "/health", quiet))
    await asyncio.sleep(2.0)  # the same probe without a flood, for comparison
    quiet.set()
    baseline = await calm
    cpu_before, began = _cpu_s(worker), time.monotonic()
    attacker = await _flood(worker.web_port)
    probes: list[asyncio.Task[Probe]] = []
    try:
        await asyncio.sleep(1.0)  # let the flood build up
        probes = [
            asyncio.create_task(get_probe(worker.web_port, "/health", stop)),
            asyncio.create_task(get_probe(worker.web_port, "/ready", stop)),
            asyncio.create_task(post_probe(worker.url + "/events", stop, [event])),
        ]
        await asyncio.sleep(FLOOD_S / 2)
        capped = await _attacker_post(worker.web_port)
        out, _ = await asyncio.wait_for(attacker.communicate(), FLOOD_S + 30)
    finally:
        stop.set()  # whatever happened, no task or process outlives the test
        health, ready, posts = await asyncio.gather(*probes)
        if attacker.returncode is None:
            attacker.kill()
            await attacker.wait()
    worker_cpu = (_cpu_s(worker) - cpu_before) / (time.monotonic() - began)
    flood = json.loads(out)
    accept_errors = worker.tail(10**9)[log_before:].count("out of system resource")
    figures = {
        "attackers": ATTACKERS,
        "nofile": NOFILE,
        **flood,
        "health_without_flood": _summary(baseline),
        "health": _summary(health),
        "ready": _summary(ready),
        "post_events": _summary(posts),
        "attacker_post": capped,
        "accept_error_lines": accept_errors,
        "worker_cpu_cores": round(worker_cpu, 2),
    }
    report("hostile-http-flood", figures)
    assert worker.proc is not None and worker.proc.poll() is None, worker.tail()
    for name, p in (("health", health), ("ready", ready), ("post", posts)):
        assert not p.failures and len(p.latencies_ms) >= 20, (name, figures)
    # Starved, the probes time out (3 s) or take seconds; the figure, p95 < 100 ms,
    # is measured and reported (docs/reliability.md, 21.3: 23-93 ms over five runs; 24 ms
    # on a quiet machine), not asserted: a first run after a busy suite measured 104.9 ms.
    # No retransmitted SYN, no timeout, and 95% within a bound no starved loop meets.
    for p in (health, ready):
        assert _summary(p)["p95_ms"] < STARVED_MS and max(p.latencies_ms) < 1000, figures
        assert max(p.connect_ms) < 500, figures
    assert max(posts.latencies_ms) < 1000, figures
    assert flood["oldest_open_s"] < DEADLINE_S + 1.5, figures  # nobody holds one for long
    assert capped[0] == 503 and capped[1], figures
    assert accept_errors <= 10, figures


async def _closed_after(reader: asyncio.StreamReader, limit_s: float) -> tuple[float, bytes]:
    """(seconds until the server closed the connection, what it sent before)."""
    began = time.monotonic()
    data = b""
    async with asyncio.timeout(limit_s):
        while chunk := await reader.read(4096):
            data += chunk
    return time.monotonic() - began, data


async def test_a_slow_body_gets_a_408_and_an_idle_connection_is_closed(
    small_worker: WorkerProcess,
) -> None:
    port = small_worker.web_port
    # A body announced as 1,000 bytes that arrives a byte every half second.
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        b"POST /events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 1000\r\n\r\n["
    )
    trickle = asyncio.create_task(_trickle_body(writer))
    try:
        took, answer = await _closed_after(reader, DEADLINE_S + 10)
    finally:
        trickle.cancel()
        writer.close()
    assert answer.startswith(b"HTTP/1.1 408") and b"body_timeout" in answer, answer[:300]
    assert took < DEADLINE_S + 3, took  # the deadline, then aiohttp's lingering (2 s)
    body_took = took
    # One request answered, then nothing: keep-alive idle ends at the deadline.
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
    try:
        took, answer = await _closed_after(reader, DEADLINE_S + 10)
    finally:
        writer.close()
    assert answer.startswith(b"HTTP/1.1 200"), answer[:300]
    assert DEADLINE_S - 0.5 < took < DEADLINE_S + 2, took
    report(
        "hostile-http-slow-body",
        {"slow_body_closed_after_s": round(body_took, 2), "idle_closed_after_s": round(took, 2)},
    )


async def _trickle_body(writer: asyncio.StreamWriter) -> None:
    while True:
        await asyncio.sleep(0.5)
        writer.write(b" ")
