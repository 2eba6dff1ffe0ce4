"""A worker's share of cluster-wide limits: the shares of disjoint owners sum to the limit."""

from __future__ import annotations

import itertools

import pytest

from nudgeflow.config.destinations import DeliverySettings
from nudgeflow.delivery.share import Share


def split(total: int, workers: int) -> list[Share]:
    """Partitions dealt round-robin over `workers` (as any assignment is: disjoint)."""
    return [Share.of(range(w, total, workers), total) for w in range(workers)]


@pytest.mark.parametrize(
    ("limit", "total", "workers"), itertools.product([4, 5, 8, 25], [4, 12], [1, 2, 3, 4])
)
def test_concurrency_shares_never_sum_past_the_limit(limit: int, total: int, workers: int) -> None:
    got = sum(s.concurrency(limit) for s in split(total, workers))
    assert limit - workers < got <= limit


def test_concurrency_shares_are_exact_when_the_partitions_divide_evenly() -> None:
    assert [s.concurrency(8) for s in split(4, 2)] == [4, 4]
    assert [s.concurrency(8) for s in split(4, 4)] == [2, 2, 2, 2]


def test_concurrency_is_at_least_one_per_worker() -> None:
    shares = split(4, 2)
    assert [s.concurrency(1) for s in shares] == [1, 1]  # documented: 1 per worker at least


@pytest.mark.parametrize("workers", [1, 2, 3, 4])
def test_rate_shares_sum_to_the_rate(workers: int) -> None:
    shares = split(4, workers)
    assert sum(s.rate(20.0) for s in shares) == pytest.approx(20.0)


def test_uneven_assignment_gets_its_partitions_worth() -> None:
    three, one = Share.of([0, 1, 2], 4), Share.of([3], 4)
    assert (three.rate(20), one.rate(20)) == (15.0, 5.0)
    assert three.concurrency(8) + one.concurrency(8) == 8


def test_a_worker_between_assignments_keeps_one_partitions_share() -> None:
    empty = Share.of([], 4)
    assert empty.rate(20.0) == 5.0 and empty.concurrency(8) == 1


def test_whole() -> None:
    assert Share.whole(4).rate(20.0) == 20.0 and Share.whole(4).concurrency(8) == 8


def test_horizon_covers_the_schedule_and_the_mark_outlives_it() -> None:
    s = DeliverySettings(retry_schedule=["10s", "20s"], jitter=0.5, max_retry_after="1m")
    assert s.horizon_s == pytest.approx(30 * 1.5 + 60)
    assert s.mark_ttl_s == pytest.approx(s.horizon_s + 3600)
