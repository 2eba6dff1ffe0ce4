import random
from datetime import UTC, datetime

import pytest

from nudgeflow.config.destinations import DeliverySettings
from nudgeflow.delivery.retry import (
    AttemptResult,
    Outcome,
    RetryPolicy,
    classify,
    parse_retry_after,
)


def status(code: int) -> AttemptResult:
    return AttemptResult(code, None, 0.01)


def error(kind: str) -> AttemptResult:
    return AttemptResult(None, kind, 0.01)


@pytest.mark.parametrize("code", [200, 201, 204, 299])
def test_2xx_delivered(code: int) -> None:
    assert classify(status(code)).outcome is Outcome.DELIVERED


@pytest.mark.parametrize("code", [408, 425, 429, 500, 502, 503, 504])
def test_retryable_statuses(code: int) -> None:
    assert classify(status(code)).outcome is Outcome.RETRY


@pytest.mark.parametrize("kind", ["timeout", "connection", "circuit_open"])
def test_retryable_errors(kind: str) -> None:
    assert classify(error(kind)).outcome is Outcome.RETRY


@pytest.mark.parametrize(
    ("result", "reason"),
    [
        (status(302), "redirect"),
        (status(301), "redirect"),
        (status(410), "gone"),
        (status(400), "status_400"),
        (status(404), "status_404"),
        (error("ssrf"), "ssrf"),
    ],
)
def test_dead_letters(result: AttemptResult, reason: str) -> None:
    verdict = classify(result)
    assert verdict.outcome is Outcome.DEAD and verdict.reason == reason


def test_retry_after_seconds_and_http_date() -> None:
    now = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
    assert parse_retry_after("1", now) == 1.0
    assert parse_retry_after("Thu, 01 Jan 2026 12:00:30 GMT", now) == 30.0
    assert parse_retry_after("Thu, 01 Jan 2026 11:00:00 GMT", now) == 0.0
    assert parse_retry_after("soon", now) is None
    assert parse_retry_after(None, now) is None


def test_schedule_with_jitter_bounds_and_exhaustion() -> None:
    policy = RetryPolicy.from_settings(DeliverySettings())
    rng = random.Random(7)
    assert policy.max_attempts == 8
    for attempt, base in enumerate(policy.delays_s, start=1):
        for _ in range(50):
            delay = policy.next_delay(attempt, None, rng)
            assert delay is not None and base * 0.8 <= delay <= base * 1.2
    assert policy.next_delay(8, None, rng) is None


def test_jitter_is_seeded() -> None:
    policy = RetryPolicy((5.0, 300.0), 3600.0)
    a = [policy.next_delay(1, None, random.Random(1)) for _ in range(3)]
    assert len(set(a)) == 1
    assert len({policy.next_delay(1, None, random.Random(s)) for s in range(10)}) > 1


def test_retry_after_wins_and_is_clamped() -> None:
    policy = RetryPolicy((0.2, 0.5, 1.0), max_retry_after_s=60.0)
    assert policy.next_delay(1, 1.0, random.Random(0)) == 1.0
    assert policy.next_delay(1, 7200.0, random.Random(0)) == 60.0
    assert policy.next_delay(4, 1.0, random.Random(0)) is None


def test_tiers_group_similar_delays() -> None:
    policy = RetryPolicy((5.0, 300.0, 1800.0), 3600.0)
    assert policy.tier_for(5.9) == 0
    assert policy.tier_for(6.1) == 1
    assert policy.tier_for(250.0) == 1
    assert policy.tier_for(3600.0) == 2
