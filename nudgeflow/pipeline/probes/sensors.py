"""Faust's own sensors, exported into our registry in seconds.

Faust ships `faust.sensors.prometheus.PrometheusMonitor`, but it observes
latencies in milliseconds, names counters without `_total` semantics
(gauges set to offsets, `total_*` counters) and serves its own `/metrics`
page through Faust's web stack, which we disable. So we subclass the plain
`Monitor` (Faust's default sensor, whose bookkeeping stays intact) and feed
the `nudgeflow_faust_*` metrics defined in `pipeline/metrics.py`.
"""

from __future__ import annotations

from typing import Any

from faust.sensors.monitor import Monitor
from faust.types import TP, AppT, CollectionT, EventT, Message, StreamT
from faust.types.assignor import PartitionAssignorT
from faust.types.transports import ConsumerT, ProducerT
from faust.types.tuples import PendingMessage, RecordMetadata

from nudgeflow.observability import metrics

_GET, _SET, _DEL = "get", "set", "delete"


class PrometheusSensor(Monitor):
    """Faust's Monitor that also records every callback as a Prometheus metric."""

    def on_message_in(self, tp: TP, offset: int, message: Message) -> None:
        super().on_message_in(tp, offset, message)
        metrics.faust_messages_received.labels(topic=tp.topic).inc()
        metrics.faust_messages_active.inc()

    def on_message_out(self, tp: TP, offset: int, message: Message) -> None:
        super().on_message_out(tp, offset, message)
        metrics.faust_messages_active.dec()

    def on_stream_event_in(
        self, tp: TP, offset: int, stream: StreamT, event: EventT
    ) -> dict | None:
        state = super().on_stream_event_in(tp, offset, stream, event)
        metrics.faust_stream_events.labels(topic=tp.topic).inc()
        return state

    def on_stream_event_out(
        self,
        tp: TP,
        offset: int,
        stream: StreamT,
        event: EventT,
        state: dict | None = None,
    ) -> None:
        super().on_stream_event_out(tp, offset, stream, event, state)
        if state is not None and state.get("time_total") is not None:
            metrics.faust_event_processing.observe(state["time_total"])

    def on_table_get(self, table: CollectionT, key: Any) -> None:
        super().on_table_get(table, key)
        metrics.faust_table_operations.labels(table=table.name, operation=_GET).inc()

    def on_table_set(self, table: CollectionT, key: Any, value: Any) -> None:
        super().on_table_set(table, key, value)
        metrics.faust_table_operations.labels(table=table.name, operation=_SET).inc()

    def on_table_del(self, table: CollectionT, key: Any) -> None:
        super().on_table_del(table, key)
        metrics.faust_table_operations.labels(table=table.name, operation=_DEL).inc()

    def on_commit_completed(self, consumer: ConsumerT, state: Any) -> None:
        super().on_commit_completed(consumer, state)
        metrics.faust_commit_duration.observe(self.commit_latency[-1])  # seconds

    def on_send_initiated(
        self,
        producer: ProducerT,
        topic: str,
        message: PendingMessage,
        keysize: int,
        valsize: int,
    ) -> Any:
        metrics.faust_messages_sent.labels(topic=topic).inc()
        return super().on_send_initiated(producer, topic, message, keysize, valsize)

    def on_send_completed(self, producer: ProducerT, state: Any, metadata: RecordMetadata) -> None:
        super().on_send_completed(producer, state, metadata)
        metrics.faust_send_duration.observe(self.send_latency[-1])  # seconds

    def on_send_error(self, producer: ProducerT, exc: BaseException, state: Any) -> None:
        super().on_send_error(producer, exc, state)
        metrics.faust_send_errors.inc()

    def on_assignment_error(
        self, assignor: PartitionAssignorT, state: dict, exc: BaseException
    ) -> None:
        super().on_assignment_error(assignor, state, exc)
        metrics.faust_assignments.labels(result="error").inc()

    def on_assignment_completed(self, assignor: PartitionAssignorT, state: dict) -> None:
        super().on_assignment_completed(assignor, state)
        metrics.faust_assignments.labels(result="completed").inc()

    def on_rebalance_start(self, app: AppT) -> dict:
        state = super().on_rebalance_start(app)
        metrics.faust_rebalances.inc()
        metrics.faust_rebalancing.set(1)
        return state

    def on_rebalance_end(self, app: AppT, state: dict) -> None:
        super().on_rebalance_end(app, state)
        metrics.faust_rebalancing.set(0)
        metrics.faust_rebalance_duration.observe(state["latency_end"])


def install_sensor(app: AppT) -> PrometheusSensor:
    """Replace the app's default Monitor; call before the app starts."""
    sensor = PrometheusSensor()
    app.monitor = sensor
    return sensor
