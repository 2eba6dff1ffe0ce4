"""A real aiohttp server on 127.0.0.1:0 in its own thread, with a recording sink.

The server runs on its own event loop so synchronous clients (requests,
Segment's own SDK, hypothesis-driven tests) can call it as well as async ones.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager

import pytest
from aiohttp import web

from nudgeflow.events.model import Event
from nudgeflow.types.sinks import SinkUnavailable
from nudgeflow.web.ingest import IngestOptions, add_ingest_routes

NOW = 1_714_564_800_000  # 2024-05-01T12:00:00Z


class RecordingSink:
    """Stands in for the Kafka producer: records what it was asked to store."""

    def __init__(self) -> None:
        self.calls: list[list[Event]] = []
        self.available = True

    async def send(self, events: Sequence[Event]) -> None:
        if not self.available:
            raise SinkUnavailable("broker unreachable")
        self.calls.append(list(events))

    @property
    def events(self) -> list[Event]:
        return [e for call in self.calls for e in call]


@contextmanager
def serve(sink: RecordingSink, options: IngestOptions) -> Iterator[str]:
    loop = asyncio.new_event_loop()
    app = web.Application()
    add_ingest_routes(app, sink, options)
    runner = web.AppRunner(app)
    ready = threading.Event()
    port: list[int] = []

    def run() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(runner.setup())
        site = web.TCPSite(runner, "127.0.0.1", 0)
        loop.run_until_complete(site.start())
        port.append(runner.addresses[0][1])
        ready.set()
        loop.run_forever()
        loop.run_until_complete(runner.cleanup())
        loop.close()

    thread = threading.Thread(target=run, name="ingest-test-server", daemon=True)
    thread.start()
    if not ready.wait(10):
        raise RuntimeError("test server did not start")
    try:
        yield f"http://127.0.0.1:{port[0]}"
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)


Server = Callable[..., tuple[str, RecordingSink]]


@pytest.fixture
def server() -> Iterator[Server]:
    """`server(**IngestOptions fields)` -> (base url, sink); clock fixed at NOW."""
    with ExitStack() as stack:

        def start(**overrides: object) -> tuple[str, RecordingSink]:
            sink = RecordingSink()
            options = IngestOptions(**{"clock": lambda: NOW, **overrides})  # type: ignore[arg-type]
            return stack.enter_context(serve(sink, options)), sink

        yield start
