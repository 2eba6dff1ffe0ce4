"""Timer ticks: wake the evaluate agent when a partition's earliest deadline is due.

A periodic `app.timer` cannot write tables (DESIGN §7), so it only *peeks*
at each owned partition's timer index and, when the earliest deadline has
passed, sends a tick record into the same partition of `<prefix>.ticks`. The
evaluate agent handles that tick in order with the partition's events and
does the firing. At most one tick per partition is in flight.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import msgspec

from nudgeflow.tables import timers as timer_index

if TYPE_CHECKING:
    from nudgeflow.pipeline.app import Runtime

log = logging.getLogger(__name__)

TICK_RESEND_S = 5.0  # a tick not handled by then (e.g. lost in a rebalance) is sent again


@dataclass
class TickBook:
    """Which partitions have a tick in flight, and since when."""

    in_flight: dict[int, float] = field(default_factory=dict)

    def should_send(self, partition: int, now: float) -> bool:
        sent = self.in_flight.get(partition)
        return sent is None or now - sent > TICK_RESEND_S

    def sent(self, partition: int, now: float) -> None:
        self.in_flight[partition] = now

    def done(self, partition: int) -> None:
        self.in_flight.pop(partition, None)


def owned_partitions(rt: Runtime) -> list[int]:
    ticks = rt.topics.ticks
    return sorted(tp.partition for tp in rt.app.assignor.assigned_actives() if tp.topic == ticks)


async def send_due_ticks(rt: Runtime) -> int:
    """One scheduler pass; returns how many ticks it sent."""
    if rt.app.rebalancing:
        return 0
    now = time.time()
    now_ms = int(now * 1000)
    sent = 0
    partitions = owned_partitions(rt)
    for p in partitions:
        first = timer_index.earliest(rt.users, p, rt.timer_floors)
        if first is None or first > now_ms or not rt.tick_book.should_send(p, now):
            continue
        await rt.app.producer.send(
            rt.topics.ticks, None, msgspec.json.encode({"now": now_ms}), p, None, None
        )
        rt.tick_book.sent(p, now)
        sent += 1
    return sent


def register(rt: Runtime) -> None:
    @rt.app.timer(interval=rt.settings.tick_interval_s, name="timer-ticks")
    async def tick() -> None:
        try:
            await send_due_ticks(rt)
        except Exception:
            log.exception("tick scheduler pass failed")
