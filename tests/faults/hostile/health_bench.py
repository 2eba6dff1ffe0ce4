"""`/health` under the slow-header flood, the web layer alone: where the latency goes.

`python -m tests.faults.hostile.health_bench [SECONDS]` runs the worker's connection
guard and middleware (web/connections.py: GuardedSite, `gate`, a 2 s header deadline,
100 connections per client) with only a `/health` route, in a process of its own under
RLIMIT_NOFILE 1024; floods it from 127.0.0.2 with slowloris.py's 1,100 connections;
probes `/health` on a fresh connection every 100 ms from 127.0.0.1; and prints one JSON
line: the probe latencies without and with the flood, and the server's event-loop lag
next to the CPU time its loop used in its slowest pass. A lag far above that CPU time is
the process waiting for a core (a loaded machine), not work of the server's.
No Kafka: the figure is the web layer's own. A figure, not a test: nothing is asserted.
"""

from __future__ import annotations

import asyncio
import json
import resource
import statistics
import subprocess
import sys
import time
from typing import Any

from aiohttp import web

from nudgeflow.web.connections import (
    ACCEPT_BATCH,
    ConnectionGuard,
    ConnectionLimits,
    GuardedSite,
    fd_ceiling,
    gate,
)

ATTACKERS = 1100


async def _serve(port: int) -> None:
    """The server process: the guard, `gate`, /health; loop lag and CPU per pass."""
    resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 1024))
    ceiling, _ = fd_ceiling(256, ACCEPT_BATCH)
    guard = ConnectionGuard(ConnectionLimits(min(1000, ceiling), 100, ceiling))
    app = web.Application(middlewares=[gate(guard)])
    app.router.add_get("/health", lambda _: web.json_response({"status": "ok"}))
    runner = web.AppRunner(app, access_log=None, keepalive_timeout=2.0, lingering_time=2.0)
    await runner.setup()
    await GuardedSite(runner, "127.0.0.1", port, guard).start()
    print("ready", flush=True)
    loop = asyncio.get_running_loop()
    while True:  # one line per 10 ms tick: (lag, CPU used by this thread meanwhile)
        wall, cpu = loop.time(), time.thread_time()
        await asyncio.sleep(0.01)
        print(f"{loop.time() - wall - 0.01:.4f} {time.thread_time() - cpu:.4f}", flush=True)


async def _probe(port: int, seconds: float) -> dict[str, Any]:
    latencies: list[float] = []
    failures = 0
    request = b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        began = time.perf_counter()
        try:
            async with asyncio.timeout(3):
                reader, writer = await asyncio.open_connection(
                    "127.0.0.1", port, local_addr=("127.0.0.1", 0)
                )
                writer.write(request)
                await reader.readline()
                writer.close()
            latencies.append((time.perf_counter() - began) * 1000)
        except (OSError, TimeoutError):
            failures += 1
        await asyncio.sleep(0.1)
    lat = sorted(latencies)
    return {
        "answered": len(lat),
        "failed": failures,
        "p50_ms": round(statistics.median(lat), 1),
        "p95_ms": round(lat[int(len(lat) * 0.95)], 1),
        "max_ms": round(lat[-1], 1),
    }


async def _bench(seconds: float) -> dict[str, Any]:
    from tests.fixtures.workers import free_port

    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "tests.faults.hostile.health_bench", "serve", str(port)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert server.stdout is not None
    assert server.stdout.readline().strip() == "ready"
    try:
        quiet = await _probe(port, 3.0)
        flood = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tests.faults.hostile.slowloris", str(port), "127.0.0.2",
            str(ATTACKERS), str(seconds + 2), stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        await asyncio.sleep(1.0)
        flooded = await _probe(port, seconds)
        out, _ = await flood.communicate()
    finally:
        server.terminate()
    lines = server.stdout.read().split("\n")[:-1]
    ticks = [(float(a), float(b)) for a, b in (line.split() for line in lines)]
    worst = max(ticks)
    return {
        "health_without_flood": quiet,
        "health_under_flood": flooded,
        "flood": json.loads(out),
        "loop_lag_max_ms": round(worst[0] * 1000, 1),
        "cpu_in_that_pass_ms": round(worst[1] * 1000, 1),
        "cpu_per_pass_max_ms": round(max(t[1] for t in ticks) * 1000, 1),
    }


if __name__ == "__main__":
    if sys.argv[1:2] == ["serve"]:
        asyncio.run(_serve(int(sys.argv[2])))
    else:
        seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 10.0
        print(json.dumps(asyncio.run(_bench(seconds))))
