"""Faust's consumer "thread", run as a service on the worker's own event loop (issue 23.2).

Faust runs aiokafka's consumer on a thread with its own loop, and every fetch, seek and
commit crosses between the two loops (a method queue, a future set from the other
thread, a wake-up of this loop) while the two threads take turns at the GIL. On the
worker's loop the fetcher's records reach the drain without that crossing. What the
thread bought: heartbeats that go on while the worker's loop is held. Here a loop held
past the session timeout (10 s) costs the worker its partitions (a rebalance, records
read again: at-least-once allows it); the inline alarm (agents/alarm.py) and the engine
threads past `handling_budget_s` keep an event from holding the loop that long.

Invariants kept from `ServiceThread`: the same start order (`_serve`: children, then
`on_thread_started`, then `start()` returns) and the same stop (`on_thread_stop` stops
aiokafka's consumer, then the shutdown event). Not kept: the thread's sweep of every task
left on its loop (`_gather_remaining_tasks`), which on the worker's loop would cancel the
worker. Chosen by `consumer_on_loop` (config/settings.py); measured in
docs/performance.md ("Consumer on the event loop").
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from mode import Service
from mode.utils.futures import maybe_async

from nudgeflow.pipeline.consumer import KafkaConsumerThread

log = logging.getLogger(__name__)


class LoopConsumerThread(KafkaConsumerThread):
    """`KafkaConsumerThread` whose calls run in place, on the loop that makes them."""

    def __init__(self, consumer: Any, *, loop: asyncio.AbstractEventLoop, **kwargs: Any) -> None:
        super().__init__(consumer, loop=loop, thread_loop=loop, **kwargs)
        self._serving: asyncio.Future[None] | None = None

    async def start(self) -> None:
        """`ServiceThread.start` without the thread: `_serve` runs as a task of this loop
        (not one of the service's own futures, which its shutdown cancels)."""
        assert not self._thread_started.is_set()
        self._thread_started.set()
        running = self._thread_running = self.parent_loop.create_future()
        self.add_future(self._keepalive2())
        self._serving = asyncio.ensure_future(self._serve())
        log.info("consumer: on the worker's event loop, not a thread")
        try:
            if not self.should_stop:
                await running  # set by `_serve` once started, or to its crash
        finally:
            self._thread_running = None

    async def stop(self) -> None:
        if self._started.is_set():
            await Service.stop(self)
        if self._serving is not None:
            await asyncio.gather(self._serving, return_exceptions=True)

    async def _gather_remaining_tasks(self) -> None:
        """Nothing: every task on this loop is the worker's, not this service's."""

    async def call_thread(self, fun: Callable[..., Any], *args: Any, **kw: Any) -> Any:
        """In place; `fun` may be a plain function, as through the thread's method queue."""
        return await maybe_async(fun(*args, **kw))
