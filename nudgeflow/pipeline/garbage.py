"""Python's garbage collector, kept from holding the worker up mid-stream.

A full (generation 2) collection walks every object the collector tracks, and a
started worker holds about 100,000 that live as long as it does (modules, Faust's
and aiokafka's services, compiled rules and templates); every event behind such a
collection waits. So once startup and the first table recovery are done, those
objects go to the permanent generation with `gc.freeze()`, which CPython provides
for this, and later full collections walk only what was allocated since (the
before/after pauses and latencies: docs/performance.md, "Garbage collection").

This is done once. A frozen object that later becomes part of a reference
cycle is never collected. Objects freed by reference counting are freed as
always. `nudgeflow_gc_frozen_objects` says how many were frozen.

Pauses are not timed from `gc.callbacks`: a collection can start deep in a
recursion (a deeply nested event being refused), where calling back into
Python fails, and a missed start would record a bogus pause.
"""

from __future__ import annotations

import gc
import logging
import time
from typing import Any

from nudgeflow.observability import metrics

log = logging.getLogger(__name__)


def freeze() -> int:
    """Collect what is garbage now, then exempt every survivor from later collections."""
    gc.collect()
    gc.freeze()
    frozen = gc.get_freeze_count()
    metrics.gc_frozen_objects.set(frozen)
    return frozen


def install(app: Any) -> None:
    """Freeze the start-up heap once the tables are recovered."""

    @app.task
    async def freeze_after_startup() -> None:
        await app.tables.recovery.completed.wait()
        started = time.perf_counter()
        frozen = freeze()
        log.info(
            "moved %d start-up objects out of the collector's way in %.0f ms",
            frozen,
            (time.perf_counter() - started) * 1000,
        )
