"""Consumer lag: log end minus committed offset, per partition this worker consumes."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from faust.types import TP
from prometheus_client import generate_latest

from nudgeflow.observability import metrics
from nudgeflow.pipeline.probes.lag import lag_of, sample_lag


@pytest.mark.parametrize(
    ("highwater", "committed", "read", "lag"),
    [
        (100, 40, 90, 60),  # committed wins: it is what a restart resumes from
        (100, 100, 99, 0),
        (100, None, 89, 10),  # nothing committed yet: the read position
        (0, None, None, 0),  # empty partition
        (5, None, None, None),  # unknown
        (None, 3, 3, None),  # nothing fetched yet
        (10, 12, None, 0),  # never negative
    ],
)
def test_lag_of(highwater: int | None, committed: int | None, read: int | None, lag: int | None):
    assert lag_of(highwater, committed, read) == lag


class FakeConsumer:
    def __init__(self, assigned: set[TP], highwaters: dict[TP, int], committed: dict) -> None:
        self._assigned = assigned
        self._highwaters = highwaters
        self._committed_offset = committed

    def assignment(self) -> set[TP]:
        return self._assigned

    def highwater(self, tp: TP) -> int:
        if tp not in self._highwaters:
            raise RuntimeError("not fetched")
        return self._highwaters[tp]


def _app(**kw: object) -> SimpleNamespace:
    events0, events1, changelog = TP("p.events", 0), TP("p.events", 1), TP("p-users-changelog", 0)
    consumer = FakeConsumer(
        {events0, events1, changelog, TP("p.ticks", 0)},
        {events0: 50, events1: 7, changelog: 1000},
        {events0: 20, events1: 7, changelog: 0},
    )
    fields: dict[str, object] = {
        "rebalancing": False,
        "consumer": consumer,
        "tables": SimpleNamespace(changelog_topics={"p-users-changelog"}),
        "monitor": SimpleNamespace(tp_read_offsets={}, tp_committed_offsets={}),
    }
    return SimpleNamespace(**{**fields, **kw})


def test_sample_lag_skips_changelogs_and_unknown_partitions() -> None:
    samples = list(sample_lag(_app()))  # type: ignore[arg-type]
    assert samples == [(("p.events", "0"), 30.0), (("p.events", "1"), 0.0)]


def test_nothing_while_rebalancing_or_before_the_consumer_starts() -> None:
    assert list(sample_lag(_app(rebalancing=True))) == []  # type: ignore[arg-type]

    class NotStarted:
        def assignment(self) -> set[TP]:
            raise RuntimeError("consumer not started")

    app = _app()
    app.consumer = NotStarted()
    assert list(sample_lag(app)) == []  # type: ignore[arg-type]


def test_the_gauge_reads_the_bound_source_at_scrape_time() -> None:
    app = _app()
    metrics.consumer_lag.bind(lambda: sample_lag(app))  # type: ignore[arg-type]
    try:
        value = metrics.REGISTRY.get_sample_value(
            "nudgeflow_consumer_lag_messages", {"topic": "p.events", "partition": "0"}
        )
        assert value == 30.0
        app.consumer._committed_offset[TP("p.events", 0)] = 50  # caught up
        text = generate_latest(metrics.REGISTRY).decode()
        assert 'nudgeflow_consumer_lag_messages{partition="0",topic="p.events"} 0.0' in text
    finally:
        metrics.consumer_lag.bind(None)
    assert "nudgeflow_consumer_lag_messages{" not in generate_latest(metrics.REGISTRY).decode()
