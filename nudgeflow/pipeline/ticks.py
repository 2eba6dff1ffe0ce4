"""Timer ticks: the record that wakes a partition's timers, and which are in flight.

The timers agent sends `{"now": ms}` into the partition of `<prefix>.ticks` whose earliest
deadline has passed; the evaluate agent handles it in order with that partition's events
and marks it done. At most one tick per partition is in flight (docs/architecture.md,
"Timers").
"""

from __future__ import annotations

from dataclasses import dataclass, field

import msgspec

TICK_RESEND_S = 5.0  # a tick not handled by then (e.g. lost in a rebalance) is sent again


class Tick(msgspec.Struct, frozen=True):
    now: int  # epoch ms at which the tick was sent


def encode_tick(now_ms: int) -> bytes:
    return msgspec.json.encode(Tick(now_ms))


@dataclass
class TickBook:
    """Which partitions have a tick in flight, and since when (monotonic seconds)."""

    in_flight: dict[int, float] = field(default_factory=dict)

    def should_send(self, partition: int, now: float) -> bool:
        sent = self.in_flight.get(partition)
        return sent is None or now - sent > TICK_RESEND_S

    def sent(self, partition: int, now: float) -> None:
        self.in_flight[partition] = now

    def done(self, partition: int) -> None:
        self.in_flight.pop(partition, None)
