"""The timers agent: wake the evaluate agent when a partition's earliest deadline is due.

A periodic `app.timer` cannot write tables (DESIGN §7), so it only *peeks*
at each owned partition's timer index and, when the earliest deadline has
passed, sends a tick record into the same partition of `<prefix>.ticks`. The
evaluate agent handles that tick in order with the partition's events and
does the firing. At most one tick per partition is in flight (pipeline/ticks.py).
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from nudgeflow.pipeline.ticks import encode_tick
from nudgeflow.tables import timers as timer_index

if TYPE_CHECKING:
    from nudgeflow.pipeline.runtime import Runtime

log = logging.getLogger(__name__)


class TickScheduler:
    """Peeks each owned partition's earliest deadline and sends the due ticks."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt

    async def send_due_ticks(self) -> int:
        """One scheduler pass; returns how many ticks it sent."""
        rt = self.rt
        if rt.app.rebalancing:
            return 0
        now = time.time()
        now_ms = int(now * 1000)
        sent = 0
        for p in rt.owned_partitions(rt.topics.ticks):
            first = timer_index.earliest(rt.users, p, rt.timer_floors)
            if first is None or first > now_ms or not rt.tick_book.should_send(p, now):
                continue
            await rt.sender.send(rt.topics.ticks, None, encode_tick(now_ms), p)
            rt.tick_book.sent(p, now)
            sent += 1
        return sent


def register(rt: Runtime) -> TickScheduler:
    """Run one scheduler pass every `tick_interval_s` on `rt.app`."""
    scheduler = TickScheduler(rt)

    @rt.app.timer(interval=rt.settings.tick_interval_s, name="timer-ticks")
    async def tick() -> None:
        try:
            await scheduler.send_due_ticks()
        except Exception:
            log.exception("tick scheduler pass failed")

    return scheduler
