"""A worker's share of a destination's cluster-wide limits (pure).

`rate_limit` and `concurrency` are limits for the whole deployment. Each worker
delivers only the triggers of the partitions it owns, so it takes the part of each
limit that its partitions carry: owning k of P partitions, `rate * k / P` calls a
second and `floor(concurrency * k / P)` concurrent calls. Summed over the workers,
which own disjoint partitions, that is the configured rate exactly and at most the
configured concurrency (at most one slot per worker less, from the rounding down),
whatever the number of workers; the shares are recomputed on every rebalance
(agents/deliver.py). Partitions are the unit: a worker whose partitions carry
little traffic leaves its share unused rather than lend it.

Two floors keep a worker able to finish what it holds: a worker that owns no
partition (between rebalances) keeps one partition's share, and every worker gets at
least one concurrent call, so a `concurrency` below the number of workers is
exceeded by the difference (README, "Delivery").
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class Share:
    owned: tuple[int, ...]  # partitions of the triggers topic this worker owns
    total: int

    @classmethod
    def whole(cls, total: int) -> Share:
        """A worker that owns everything (one worker, or before the first assignment)."""
        return cls(tuple(range(total)), total)

    @classmethod
    def of(cls, owned: Iterable[int], total: int) -> Share:
        return cls(tuple(sorted(set(owned))), total)

    @property
    def fraction(self) -> float:
        return max(len(self.owned), 1) / self.total

    def concurrency(self, limit: int) -> int:
        """This worker's concurrent calls out of a cluster-wide `limit`."""
        return max(1, limit * len(self.owned) // self.total)

    def rate(self, per_s: float) -> float:
        """This worker's calls per second out of a cluster-wide `per_s`."""
        return per_s * self.fraction
