"""Metric sources that need the running app, structured logs.

`install(rt)` is called once per worker before the app starts (by the web
server that exports `/metrics`): Faust's sensors, consumer lag, RocksDB memory, and a closed
circuit for every configured destination so each shows up before its first
delivery. The evaluate agent keeps `nudgeflow_timers_pending` (pending.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from nudgeflow.observability import metrics
from nudgeflow.pipeline.probes.lag import sample_lag
from nudgeflow.pipeline.probes.rocksdb import memory_of
from nudgeflow.pipeline.probes.sensors import install_sensor

if TYPE_CHECKING:
    from nudgeflow.pipeline.runtime import Runtime


def install(rt: Runtime) -> None:
    install_sensor(rt.app)
    app = rt.app
    metrics.consumer_lag.bind(lambda: sample_lag(app))
    tables = list(app.tables.values())
    metrics.rocksdb_memory.bind(lambda: memory_of(tables))
    if "deliver" in rt.settings.roles:
        for name in rt.config.destinations:
            metrics.circuit_state.labels(destination=name).set(0)
