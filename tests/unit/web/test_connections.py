"""Connection caps on a real aiohttp server behind the guard (web/connections.py).

In-process: a tiny app with a probe route, a plain route and a route that holds its
request until released, served by `GuardedSite` with small limits; clients are raw
sockets from 127.0.0.x addresses, so each case is exact and fast.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from nudgeflow.web.connections import ConnectionGuard, ConnectionLimits, GuardedSite, gate
from nudgeflow.web.errors import json_errors

Pair = tuple[asyncio.StreamReader, asyncio.StreamWriter]


class Served:
    def __init__(self, guard: ConnectionGuard, port: int) -> None:
        self.guard = guard
        self.port = port
        self.release = asyncio.Event()

    async def connect(self, source: str = "127.0.0.1") -> Pair:
        return await asyncio.open_connection("127.0.0.1", self.port, local_addr=(source, 0))

    async def ask(self, path: str, source: str = "127.0.0.1") -> bytes:
        reader, writer = await self.connect(source)
        writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        try:
            async with asyncio.timeout(5):
                return await reader.read()
        finally:
            writer.close()


async def _serve(limits: ConnectionLimits) -> AsyncIterator[Served]:
    guard = ConnectionGuard(limits)
    app = web.Application(middlewares=[gate(guard), json_errors])
    holder: list[Served] = []

    async def ok(request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    async def hold(request: web.Request) -> web.Response:
        await holder[0].release.wait()
        return web.json_response({"held": True})

    app.router.add_get("/health", ok)
    app.router.add_get("/x", ok)
    app.router.add_get("/hold", hold)
    runner = web.AppRunner(app, keepalive_timeout=30)
    await runner.setup()
    site = GuardedSite(runner, "127.0.0.1", 0, guard)
    await site.start()
    served = Served(guard, runner.addresses[0][1])
    holder.append(served)
    try:
        yield served
    finally:
        served.release.set()
        await runner.cleanup()


@pytest.fixture
async def small() -> AsyncIterator[Served]:
    async for s in _serve(ConnectionLimits(max_total=3, max_per_client=2, ceiling=5)):
        yield s


async def _idle(served: Served, n: int, source: str = "127.0.0.1") -> list[asyncio.StreamWriter]:
    writers = []
    for _ in range(n):
        _, writer = await served.connect(source)
        writers.append(writer)
    await _until(lambda: len(served.guard.conns) >= n)
    return writers


async def _until(check, timeout: float = 5.0) -> None:  # type: ignore[no-untyped-def]
    async with asyncio.timeout(timeout):
        while not check():
            await asyncio.sleep(0.01)


async def test_beyond_the_per_client_cap_a_request_gets_503_but_probes_are_answered(
    small: Served,
) -> None:
    held = await _idle(small, 2)
    refused = await small.ask("/x")
    assert refused.startswith(b"HTTP/1.1 503") and b"Retry-After: 5" in refused, refused
    assert (await small.ask("/health")).startswith(b"HTTP/1.1 200")
    assert (await small.ask("/x", source="127.0.0.2")).startswith(b"HTTP/1.1 200")
    for w in held:
        w.close()


async def test_beyond_the_total_cap_every_address_gets_503(small: Served) -> None:
    held = await _idle(small, 2, "127.0.0.2") + await _idle(small, 1, "127.0.0.3")
    await _until(lambda: small.guard.admitted == 3)
    refused = await small.ask("/x", source="127.0.0.4")
    assert refused.startswith(b"HTTP/1.1 503") and b"too_many_connections" in refused
    assert (await small.ask("/health", source="127.0.0.4")).startswith(b"HTTP/1.1 200")
    for w in held:
        w.close()


async def test_at_the_ceiling_the_oldest_idle_connection_makes_room() -> None:
    async for served in _serve(ConnectionLimits(max_total=5, max_per_client=5, ceiling=5)):
        held = [await served.connect(f"127.0.0.{n}") for n in range(2, 7)]
        await _until(lambda: len(served.guard.conns) == 5)  # noqa: B023
        assert (await served.ask("/health", source="127.0.0.7")).startswith(b"HTTP/1.1 200")
        async with asyncio.timeout(5):
            assert await held[0][0].read() == b""  # the oldest was closed to make room
        assert len(served.guard.conns) <= 5


async def test_at_the_ceiling_with_every_connection_busy_a_new_one_gets_a_bare_503(
    small: Served,
) -> None:
    busy = []
    for source in ("127.0.0.2", "127.0.0.3", "127.0.0.4"):
        reader, writer = await small.connect(source)
        writer.write(b"GET /hold HTTP/1.1\r\nHost: x\r\n\r\n")
        busy.append((reader, writer))
    for source in ("127.0.0.5", "127.0.0.6"):  # excess (total cap), asking a probe slowly
        _, writer = await small.connect(source)
        writer.write(b"GET /health HTTP/1.1\r\n")
        busy.append((None, writer))  # type: ignore[arg-type]
    await _until(lambda: len(small.guard.conns) == 5)
    await _until(lambda: sum(c.busy for c in small.guard.conns.values()) == 3)
    # the two excess ones are idle, so they are evicted first; then all five are busy
    answer = await small.ask("/health", source="127.0.0.7")
    assert answer.startswith(b"HTTP/1.1 200"), answer
    small.release.set()
    for reader, _ in busy[:3]:
        async with asyncio.timeout(5):
            assert (await reader.readline()).startswith(b"HTTP/1.1 200")


async def test_an_excess_connection_that_sends_nothing_useful_is_closed_after_its_grace() -> None:
    limits = ConnectionLimits(max_total=1, max_per_client=1, ceiling=10, excess_grace_s=0.2)
    async for served in _serve(limits):
        kept = await _idle(served, 1)
        reader, writer = await served.connect()
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n")  # a slow head, never finished
        async with asyncio.timeout(2):
            answer = await reader.read()
        assert answer.startswith(b"HTTP/1.1 503")
        await _until(lambda: len(served.guard.conns) == len(kept))  # noqa: B023
