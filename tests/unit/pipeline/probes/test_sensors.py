"""Faust's sensor callbacks land in our registry, in seconds."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from faust.types import TP

from nudgeflow.observability import metrics
from nudgeflow.pipeline.probes.sensors import PrometheusSensor, install_sensor


def value(name: str, labels: dict[str, str] | None = None) -> float:
    return metrics.REGISTRY.get_sample_value(name, labels or {}) or 0.0


class FakeTask:
    pass


class FakeStream:  # Faust's Monitor keeps weak references to streams and their tasks
    def __init__(self) -> None:
        self.task_owner = FakeTask()


@pytest.fixture
def sensor() -> PrometheusSensor:
    clock = iter([100.0, 100.25, 200.0, 200.5, 300.0, 300.125, 400.0, 400.04])
    s = PrometheusSensor()
    s.time = lambda: next(clock)  # type: ignore[method-assign]
    return s


def test_messages_events_and_processing_time(sensor: PrometheusSensor) -> None:
    tp = TP("p.events", 3)
    message: Any = SimpleNamespace(time_in=None, time_out=None, time_total=None)
    before = value("nudgeflow_faust_messages_received_total", {"topic": "p.events"})
    count = value("nudgeflow_faust_event_processing_seconds_count")
    total = value("nudgeflow_faust_event_processing_seconds_sum")
    active = value("nudgeflow_faust_messages_active")

    sensor.on_message_in(tp, 10, message)  # time 100.0
    assert value("nudgeflow_faust_messages_active") == active + 1
    stream: Any = FakeStream()
    state = sensor.on_stream_event_in(tp, 10, stream, None)  # type: ignore[arg-type]  # 100.25
    sensor.on_stream_event_out(tp, 10, stream, None, state)  # type: ignore[arg-type]  # 200.0
    sensor.on_message_out(tp, 10, message)

    assert value("nudgeflow_faust_messages_received_total", {"topic": "p.events"}) == before + 1
    assert value("nudgeflow_faust_stream_events_total", {"topic": "p.events"}) >= 1
    assert value("nudgeflow_faust_event_processing_seconds_count") == count + 1
    assert value("nudgeflow_faust_event_processing_seconds_sum") == pytest.approx(total + 99.75)
    assert value("nudgeflow_faust_messages_active") == active


def test_sends_commits_and_tables(sensor: PrometheusSensor) -> None:
    sent = value("nudgeflow_faust_messages_sent_total", {"topic": "p.triggers"})
    seconds = value("nudgeflow_faust_send_seconds_sum")
    state = sensor.on_send_initiated(None, "p.triggers", None, 1, 2)  # type: ignore[arg-type]
    sensor.on_send_completed(None, state, None)  # type: ignore[arg-type]
    assert value("nudgeflow_faust_messages_sent_total", {"topic": "p.triggers"}) == sent + 1
    assert value("nudgeflow_faust_send_seconds_sum") == pytest.approx(seconds + 0.25)

    errors = value("nudgeflow_faust_send_errors_total")
    sensor.on_send_error(None, RuntimeError("x"), 0.0)  # type: ignore[arg-type]
    assert value("nudgeflow_faust_send_errors_total") == errors + 1

    table: Any = SimpleNamespace(name="users")
    gets = value("nudgeflow_faust_table_operations_total", {"table": "users", "operation": "get"})
    sensor.on_table_get(table, b"k")
    sensor.on_table_set(table, b"k", b"v")
    sensor.on_table_del(table, b"k")
    labels = {"table": "users", "operation": "get"}
    assert value("nudgeflow_faust_table_operations_total", labels) == gets + 1
    for op in ("set", "delete"):
        assert value("nudgeflow_faust_table_operations_total", {"table": "users", "operation": op})


def test_rebalances(sensor: PrometheusSensor) -> None:
    started = value("nudgeflow_faust_rebalances_total")
    app: Any = SimpleNamespace(rebalancing_count=1)
    state = sensor.on_rebalance_start(app)
    assert value("nudgeflow_faust_rebalancing") == 1
    assert value("nudgeflow_faust_rebalances_total") == started + 1
    sensor.on_rebalance_end(app, state)
    assert value("nudgeflow_faust_rebalancing") == 0
    assert value("nudgeflow_faust_rebalance_seconds_count") >= 1


def test_install_replaces_the_apps_monitor() -> None:
    app: Any = SimpleNamespace(monitor=None)
    sensor = install_sensor(app)
    assert app.monitor is sensor and isinstance(sensor, PrometheusSensor)
