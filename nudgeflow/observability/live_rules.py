"""Live rules metrics (DESIGN §3.3): the version a worker runs, and versions it refused.

Set by the worker's rules follower (pipeline/live_rules.py). Registered in the one
registry of observability/metrics.py.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge

from nudgeflow.observability.metrics import REGISTRY

live_version = Gauge(
    "nudgeflow_rules_live_version",
    "The rules version this worker's engine runs (0: the --config file, not a version)",
    registry=REGISTRY,
)
version_errors = Counter(
    "nudgeflow_rules_version_errors",
    "Rules versions that failed to load on this worker (it stays on its last good one)",
    registry=REGISTRY,
)
swap_delay = Gauge(
    "nudgeflow_rules_swap_delay_seconds",
    "From the last version's publish (broker time) to its engine being live here",
    registry=REGISTRY,
)
topic_reads = Counter(
    "nudgeflow_rules_topic_reads",
    "Whole reads of the rules topic with a new consumer (a start, a publish's read-back,"
    " a route on a worker with no follower); GET /rules and /rules/history read memory",
    registry=REGISTRY,
)
