"""The throughput scenario's layer below Kafka: the evaluate agent's per-event work in a
plain Python loop, on the same events, so a run shows how much of a worker's time is
the engine and its state codec and how much is the shell around them (issue 23.4).

Per event, what `agents/evaluate.py` does between taking a record and sending:
`router.route` (parse and check it, as the agent's `ingest`), `decode_state` of the
user's stored bytes, `Engine.apply`, and `agents.plan.plan` (encode the actions'
records and the new state), then the state bytes kept for the user's next event.
Left out: Kafka, RocksDB (a dict holds the encoded states), the timer index, metrics,
the guard's alarm and the sends.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass

from nudgeflow.agents.plan import plan
from nudgeflow.agents.router import Apply, partition_for, route
from nudgeflow.bench.configs import default_config
from nudgeflow.bench.workloads import Keyed
from nudgeflow.config.loader import load_config
from nudgeflow.config.settings import WorkerSettings
from nudgeflow.engine.actions import Trigger
from nudgeflow.engine.core import Engine
from nudgeflow.engine.state import decode_state
from nudgeflow.pipeline.runtime import worker_engine


@dataclass(frozen=True, slots=True)
class LoopResult:
    events: int
    applied: int
    duplicates: int
    rejected: int  # refused by `router.route` (none for the bench's own events)
    actions: int  # every action the engine returned, `rearmed` included
    triggers: int
    wall_s: float
    cpu_s: float

    @property
    def per_s(self) -> float:
        return self.events / max(1e-9, self.wall_s)

    @property
    def per_cpu_s(self) -> float:
        return self.events / max(1e-9, self.cpu_s)


def default_engine() -> Engine:
    """The engine a worker runs for the five default rules, with default settings."""
    return worker_engine(load_config(default_config()), WorkerSettings())


def run(
    engine: Engine,
    records: Iterable[Keyed],
    partitions: int,
    *,
    now_ms: int | None = None,
    states: dict[bytes, bytes] | None = None,
) -> LoopResult:
    """Apply every keyed record as the evaluate agent would.

    `now_ms`: the clock the agent reads per event (default: the wall clock at each event,
    as a worker). `states`: the table (user key -> encoded state), a fresh dict if None.
    """
    keyed = [(k, v, partition_for(k, partitions)) for k, v in records]
    limits = WorkerSettings().event_limits()
    states = {} if states is None else states
    applied = duplicates = rejected = actions = triggers = 0
    wall, cpu = time.perf_counter(), time.process_time()
    for key, value, partition in keyed:
        now = now_ms if now_ms is not None else int(time.time() * 1000)
        routed = route(key, value, partition, partitions, now_ms=now, limits=limits)
        if not isinstance(routed, Apply):
            rejected += 1
            continue
        stored = states.get(routed.user_key)
        step = engine.apply(decode_state(stored) if stored else None, routed.event, now)
        if step.duplicate:
            duplicates += 1
            continue
        planned = plan(step.state, step.actions)
        states[routed.user_key] = planned.state
        applied += 1
        actions += len(planned.records)
        triggers += sum(1 for action, _ in planned.records if isinstance(action, Trigger))
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return LoopResult(len(keyed), applied, duplicates, rejected, actions, triggers, wall, cpu)
