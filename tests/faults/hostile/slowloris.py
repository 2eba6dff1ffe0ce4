"""A slow-header flood, run as its own process so it does not share the probes' event loop.

`python -m tests.faults.hostile.slowloris PORT SOURCE N SECONDS` opens N connections
from address SOURCE to 127.0.0.1:PORT, each sending a request's headers one line every
EVERY_S and reconnecting RECONNECT_S after the server drops it, for SECONDS; then prints
one JSON line: connects, failed connects, connections open at the end, how long the
oldest of them had been open, and the longest lifetime of a dropped one.
"""

from __future__ import annotations

import asyncio
import json
import resource
import sys
import time

EVERY_S = 1.0
RECONNECT_S = 0.25  # after a drop (slowloris tools refill their sockets every few seconds)


class Flood:
    def __init__(self, port: int, source: str) -> None:
        self.port = port
        self.source = source
        self.stop = asyncio.Event()
        self.connects = 0
        self.failed = 0
        self.open_since: dict[int, float] = {}
        self.lifetimes: list[float] = []

    async def one(self, i: int) -> None:
        while not self.stop.is_set():
            try:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection("127.0.0.1", self.port, local_addr=(self.source, 0)),
                    2.0,
                )
            except (OSError, TimeoutError):
                self.failed += 1
                await asyncio.sleep(0.2)
                continue
            self.connects += 1
            opened = self.open_since[i] = time.monotonic()
            await self.trickle(reader, writer)
            del self.open_since[i]
            if not self.stop.is_set():
                self.lifetimes.append(time.monotonic() - opened)
            writer.close()
            await asyncio.sleep(RECONNECT_S)

    async def trickle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Until the server answers or drops the connection (or the flood ends)."""
        try:
            writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n")
            n = 0
            while not self.stop.is_set():
                try:
                    await asyncio.wait_for(reader.read(4096), EVERY_S)
                    return  # b"" (dropped) or an answer (503): either way the server is done
                except TimeoutError:
                    n += 1
                    writer.write(f"X-Slow-{n}: 1\r\n".encode())
        except OSError:
            return


async def main(port: int, source: str, n: int, seconds: float) -> None:
    flood = Flood(port, source)
    tasks = [asyncio.create_task(flood.one(i)) for i in range(n)]
    await asyncio.sleep(seconds)
    now = time.monotonic()
    figures = {
        "connects": flood.connects,
        "failed_connects": flood.failed,
        "open_at_end": len(flood.open_since),
        "oldest_open_s": round(max((now - t for t in flood.open_since.values()), default=0), 2),
        "longest_lifetime_s": round(max(flood.lifetimes, default=0.0), 2),
    }
    flood.stop.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    print(json.dumps(figures), flush=True)


if __name__ == "__main__":
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    port, source, count, seconds = sys.argv[1:5]
    asyncio.run(main(int(port), source, int(count), float(seconds)))
