"""`nudgeflow_timers_pending`: timer index entries in the partitions this worker owns.

Counting by scan on every scrape would cost a range scan per partition per
scrape; instead the evaluate agent reports each index change (`moved`) and
a partition is scanned once, the first time it is seen after it was
assigned here. A revoked partition's count is dropped (its next owner counts
it), so the sum across workers is the cluster's pending timers.

What is counted is index entries: normally one per user with an armed rule;
an entry left over by a crash counts until the firing path clears it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import faust
from faust.types import TP

from nudgeflow.observability import metrics
from nudgeflow.pipeline.runtime import owned_partitions
from nudgeflow.tables import timers as timer_index

if TYPE_CHECKING:
    from nudgeflow.pipeline.runtime import Runtime


def count_index(table: faust.Table, partition: int) -> int:
    """One pass over the partition's index prefix (it stops at the first user key)."""
    return sum(1 for _ in timer_index._scan(table, partition))


class PendingTimers:
    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.counts: dict[int, int] = {}

    @classmethod
    def attach(cls, rt: Runtime) -> PendingTimers:
        """Create and follow the app's rebalances (count new partitions, drop lost ones)."""
        pending = cls(rt)
        app: Any = rt.app  # mode's Signal typing rejects bound-method receivers
        app.on_partitions_revoked.connect(pending._on_revoked)
        app.on_rebalance_complete.connect(pending._on_rebalance_complete)
        return pending

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def moved(self, before: int | None, after: int | None, partition: int | None = None) -> None:
        """A user's index entry changed from `before` to `after` (None: no entry).

        Call after the table writes, inside the stream iteration (the current
        event's partition is the table partition written).
        """
        p = partition if partition is not None else _current_partition()
        if p is None:
            return
        # Counted from RocksDB, which gets this change only once its changelog record
        # is acked (tables/direct.py): the scan sees the index from before it.
        if p not in self.counts:
            self.counts[p] = count_index(self.rt.users, p)
        self.counts[p] += (after is not None) - (before is not None)
        self._publish()

    def revoked(self, partitions: Iterable[int]) -> None:
        for p in partitions:
            self.counts.pop(p, None)
        self._publish()

    def count_new(self, partitions: Iterable[int]) -> None:
        for p in partitions:
            if p not in self.counts:
                self.counts[p] = count_index(self.rt.users, p)
        self._publish()

    def _publish(self) -> None:
        metrics.timers_pending.set(self.total)

    # mode signal receivers: (sender, *args, signal=..., **kwargs)
    async def _on_revoked(self, sender: Any, *args: Any, signal: Any = None, **_: Any) -> None:
        revoked: Iterable[TP] = args[0] if args else ()
        ticks = self.rt.topics.ticks
        self.revoked(tp.partition for tp in revoked if tp.topic == ticks)

    async def _on_rebalance_complete(
        self, sender: Any, *args: Any, signal: Any = None, **_: Any
    ) -> None:
        self.count_new(owned_partitions(self.rt.app, self.rt.topics.ticks))


def _current_partition() -> int | None:
    event = faust.current_event()
    return None if event is None else event.message.partition
