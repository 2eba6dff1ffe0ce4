"""Where a partition's timer-index scans start: past the tombstones of fired timers.

RocksDB keeps a deleted key as a tombstone until compaction, and a range scan
steps over every tombstone in its way. Each fired timer deletes its index entry
at the front of the index, so a scan from the first possible key gets slower
with every timer fired (docs/performance.md, "Timers"), and the tick scheduler
scans every partition several times a second.

A floor is a deadline below which a partition has no live entry: the first live
deadline the last scan found (or "none at all"). Every `add` below it lowers it.
An add reaches RocksDB only when its changelog record is acked (tables/direct.py),
so for ADD_GRACE_S (at least) after an add, scans keep the floor at or below it.
It is only a hint about keys this process wrote, so it is forgotten whenever
that may stop being true: on every rebalance (another worker may have written
the partition, and recovery replays its changelog), when the partition's
RocksDB was reopened, and every FULL_SCAN_S as a safety net.
"""

from __future__ import annotations

import time
from typing import Any

FULL_SCAN_S = 30.0
ADD_GRACE_S = 2.5  # ≫ a changelog ack; a slower one waits for the full scan
_EMPTY = 2**63 - 1  # "no live entry at all": any add lowers it


class TimerFloors:
    def __init__(self, clock: Any = time.monotonic) -> None:
        self._clock = clock
        # partition -> (id of the RocksDB it was seen in, floor deadline, when found)
        self._floors: dict[int, tuple[int, int, float]] = {}
        # partition -> [(lowest deadline added, when the first of those adds was)]: adds
        # in buckets of ADD_GRACE_S, each kept until its last add is ADD_GRACE_S old
        self._added: dict[int, list[tuple[int, float]]] = {}

    def start(self, partition: int, db: Any) -> int | None:
        """The deadline to seek from, or None for the start of the index."""
        known = self._floors.get(partition)
        if known is None:
            return None
        db_id, floor, found_at = known
        if db_id != id(db) or self._clock() - found_at > FULL_SCAN_S:
            del self._floors[partition]
            return None
        return floor

    def found(self, partition: int, db: Any, first: int | None, since: int | None) -> None:
        """A scan from `since` (None: the start) saw `first` as the first live deadline."""
        floor = min([_EMPTY if first is None else first, *self._recent_adds(partition)])
        known = self._floors.get(partition)
        found_at = known[2] if known is not None and since is not None else self._clock()
        self._floors[partition] = (id(db), floor, found_at)

    def lower(self, partition: int | None, deadline: int) -> None:
        """An entry at `deadline` was just added to `partition`'s index."""
        if partition is None:
            self._floors.clear()
            return
        now = self._clock()
        buckets = self._added.setdefault(partition, [])
        if not buckets or now - buckets[-1][1] >= ADD_GRACE_S:
            buckets.append((deadline, now))
        elif deadline < buckets[-1][0]:
            buckets[-1] = (deadline, buckets[-1][1])
        known = self._floors.get(partition)
        if known is not None and deadline < known[1]:
            self._floors[partition] = (known[0], deadline, known[2])

    def _recent_adds(self, partition: int) -> list[int]:
        """The lowest deadline of each bucket of adds that may not be in RocksDB yet."""
        buckets = self._added.get(partition)
        if not buckets:
            return []
        now = self._clock()
        buckets[:] = [b for b in buckets if now - b[1] < 2 * ADD_GRACE_S]
        return [deadline for deadline, _ in buckets]

    def forget(self) -> None:
        self._floors.clear()

    def attach(self, app: Any) -> TimerFloors:
        """Forget every floor on each rebalance (mode signals: sender, *args, **kwargs)."""

        async def forget(sender: Any, *args: Any, **kwargs: Any) -> None:
            self.forget()

        app.on_partitions_revoked.connect(forget, weak=False)
        app.on_partitions_assigned.connect(forget, weak=False)
        app.on_rebalance_complete.connect(forget, weak=False)
        return self
