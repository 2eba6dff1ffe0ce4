"""Every Prometheus metric Nudgeflow exports, defined once (DESIGN §5).

Naming follows Prometheus conventions: `nudgeflow_` prefix, base units
(seconds), `_total` counters (prometheus-client appends it), and no user ids,
emails or URLs in labels.
"""

from __future__ import annotations

import logging
import platform
from collections.abc import Callable, Iterable, Iterator, Sequence
from importlib.metadata import PackageNotFoundError, version

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from nudgeflow import __version__
from nudgeflow.engine.actions import Conversion, Decision, Trigger
from nudgeflow.engine.funnel import stages, step_of

log = logging.getLogger(__name__)

REGISTRY = CollectorRegistry(auto_describe=True)

Sample = tuple[Sequence[str], float]


class SampledGauge(Collector):
    """A gauge computed when scraped, from a source the worker binds once it runs.

    For values that already live elsewhere (the Kafka consumer's offsets):
    reading them at scrape time costs nothing between scrapes and never
    leaves a stale series behind after a rebalance moves a partition away.
    """

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str],
        registry: CollectorRegistry,
    ) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = list(labelnames)
        self._source: Callable[[], Iterable[Sample]] | None = None
        registry.register(self)

    def bind(self, source: Callable[[], Iterable[Sample]] | None) -> None:
        self._source = source

    def _family(self) -> GaugeMetricFamily:
        return GaugeMetricFamily(self.name, self.documentation, labels=self.labelnames)

    def describe(self) -> Iterator[GaugeMetricFamily]:
        yield self._family()

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = self._family()
        if self._source is not None:
            try:
                for labels, value in self._source():
                    family.add_metric(list(labels), value)
            except Exception:  # a scrape must never fail because one source did
                log.exception("sampling %s failed", self.name)
        yield family


def _version_of(dist: str) -> str:
    try:
        return version(dist)
    except PackageNotFoundError:
        return "unknown"


_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
_LATENESS_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300, 3600)

build_info = Info("nudgeflow_build", "Nudgeflow and runtime versions", registry=REGISTRY)
build_info.info(
    {
        "version": __version__,
        "python": platform.python_version(),
        "faust": _version_of("faust-streaming"),
        "aiokafka": _version_of("aiokafka"),
    }
)

events_received = Counter(
    "nudgeflow_events_received", "Events received, by source", ["source"], registry=REGISTRY
)
events_rejected = Counter(
    "nudgeflow_events_rejected",
    "Events rejected (sent to the DLQ or refused over HTTP), by reason",
    ["source", "reason"],
    registry=REGISTRY,
)
events_applied = Counter(
    "nudgeflow_events_applied", "Events applied to user state", registry=REGISTRY
)
events_duplicate = Counter(
    "nudgeflow_events_duplicate",
    "Events dropped because their event_id was already applied for the user",
    registry=REGISTRY,
)
identity_merges = Counter(
    "nudgeflow_identity_merges",
    "Identity merge steps (engine/identity.py): moved, merged, returned, forwarded, "
    "refused_<reason>, dropped_<reason>",
    ["outcome"],
    registry=REGISTRY,
)
identity_rerouted = Counter(
    "nudgeflow_identity_rerouted",
    "Events under a merged-away id sent on to the id it was merged into",
    registry=REGISTRY,
)
decisions = Counter(
    "nudgeflow_decisions",
    "Rule decisions by rule and outcome (reason for suppressions; the limit for render_failed)",
    ["rule", "outcome", "reason"],
    registry=REGISTRY,
)
timers_pending = Gauge(
    "nudgeflow_timers_pending",
    "Timer index entries (users with something due) in the partitions this worker owns",
    registry=REGISTRY,
)
timer_lateness = Histogram(
    "nudgeflow_timer_lateness_seconds",
    "How long after its deadline a timer fired",
    buckets=_LATENESS_BUCKETS,
    registry=REGISTRY,
)
event_to_trigger = Histogram(
    "nudgeflow_event_to_trigger_seconds",
    "From an event's arrival at the worker to its trigger record being sent",
    buckets=_LATENCY_BUCKETS,
    registry=REGISTRY,
)
triggers_emitted = Counter(
    "nudgeflow_triggers", "Trigger records produced", ["rule", "variant"], registry=REGISTRY
)
deliveries = Counter(
    "nudgeflow_deliveries",
    "Webhook deliveries by destination and final outcome",
    ["destination", "outcome"],
    registry=REGISTRY,
)
delivery_attempts = Counter(
    "nudgeflow_delivery_attempts",
    "Webhook attempts by destination and status class (2xx, 4xx, 5xx, timeout, error)",
    ["destination", "status_class"],
    registry=REGISTRY,
)
delivery_attempt_duration = Histogram(
    "nudgeflow_delivery_attempt_duration_seconds",
    "Duration of one webhook attempt",
    ["destination"],
    buckets=_LATENCY_BUCKETS,
    registry=REGISTRY,
)
delivery_retries = Counter(
    "nudgeflow_delivery_retries", "Retries scheduled", ["destination"], registry=REGISTRY
)
malloc_trim_seconds = Histogram(
    "nudgeflow_malloc_trim_seconds",
    "Time the worker's periodic malloc_trim held the event loop (pipeline/malloc.py)",
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
    registry=REGISTRY,
)
gc_frozen_objects = Gauge(
    "nudgeflow_gc_frozen_objects",
    "Start-up objects moved out of the garbage collector's way (pipeline/garbage.py)",
    registry=REGISTRY,
)
consumer_rewinds = Counter(
    "nudgeflow_consumer_rewinds",
    "Times a source partition's fetch jumped ahead and was read again (pipeline/consumer.py)",
    ["topic"],
    registry=REGISTRY,
)
dead_letters = Counter(
    "nudgeflow_dead_letters", "Records sent to a dead-letter topic", ["topic"], registry=REGISTRY
)
circuit_state = Gauge(
    "nudgeflow_circuit_breaker_state",
    "Circuit breaker per destination: 0 closed, 1 half-open, 2 open",
    ["destination"],
    registry=REGISTRY,
)
experiment_exposures = Counter(
    "nudgeflow_experiment_exposures",
    "Experiment exposures by rule and variant",
    ["rule", "variant"],
    registry=REGISTRY,
)
experiment_conversions = Counter(
    "nudgeflow_experiment_conversions",
    "Conversions attributed by rule and variant",
    ["rule", "variant", "kind"],
    registry=REGISTRY,
)
consumer_lag = SampledGauge(
    "nudgeflow_consumer_lag_messages",
    "Messages between the committed offset and the log end, per topic and partition",
    ["topic", "partition"],
    registry=REGISTRY,
)
rocksdb_memory = SampledGauge(
    "nudgeflow_rocksdb_memory_bytes",
    "RocksDB memory of this worker's open table partitions: memtables, block cache, "
    "table readers (index and filter blocks)",
    ["table", "kind"],
    registry=REGISTRY,
)

# -- Faust's own sensors (observability/sensors.py feeds these), in seconds ---------

_FAUST_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
_REBALANCE_BUCKETS = (0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)

faust_messages_received = Counter(
    "nudgeflow_faust_messages_received",
    "Messages the Faust consumer handed to streams, by topic",
    ["topic"],
    registry=REGISTRY,
)
faust_messages_active = Gauge(
    "nudgeflow_faust_messages_active",
    "Messages received and not yet acknowledged",
    registry=REGISTRY,
)
faust_stream_events = Counter(
    "nudgeflow_faust_stream_events",
    "Events processed by agent streams, by topic",
    ["topic"],
    registry=REGISTRY,
)
faust_event_processing = Histogram(
    "nudgeflow_faust_event_processing_seconds",
    "Time an agent spent on one event",
    buckets=_FAUST_BUCKETS,
    registry=REGISTRY,
)
faust_table_operations = Counter(
    "nudgeflow_faust_table_operations",
    "Table key reads, writes and deletes",
    ["table", "operation"],
    registry=REGISTRY,
)
faust_messages_sent = Counter(
    "nudgeflow_faust_messages_sent",
    "Records handed to the producer, by topic",
    ["topic"],
    registry=REGISTRY,
)
faust_send_errors = Counter(
    "nudgeflow_faust_send_errors", "Records the producer failed to publish", registry=REGISTRY
)
faust_send_duration = Histogram(
    "nudgeflow_faust_send_seconds",
    "From a record handed to the producer to the broker's acknowledgement",
    buckets=_FAUST_BUCKETS,
    registry=REGISTRY,
)
faust_commit_duration = Histogram(
    "nudgeflow_faust_commit_seconds",
    "Duration of one consumer offset commit",
    buckets=_FAUST_BUCKETS,
    registry=REGISTRY,
)
faust_rebalances = Counter(
    "nudgeflow_faust_rebalances", "Consumer group rebalances started", registry=REGISTRY
)
faust_rebalancing = Gauge(
    "nudgeflow_faust_rebalancing",
    "1 while a rebalance (including table recovery) is in progress",
    registry=REGISTRY,
)
faust_rebalance_duration = Histogram(
    "nudgeflow_faust_rebalance_seconds",
    "From the start of a rebalance to the end of table recovery",
    buckets=_REBALANCE_BUCKETS,
    registry=REGISTRY,
)
faust_assignments = Counter(
    "nudgeflow_faust_assignments",
    "Partition assignments computed by this worker, by result (completed, error)",
    ["result"],
    registry=REGISTRY,
)
handling_failures = Counter(
    "nudgeflow_handling_failures",
    "Failed attempts at one record's (or one due user's) engine call, by outcome: error "
    "(it raised), overrun (stopped past handling_budget_s)",
    ["outcome"],
    registry=REGISTRY,
)
quarantined = Counter(
    "nudgeflow_quarantined",
    "Records (kind=record) and due timers (kind=timer) sent to the events DLQ after "
    "max_attempts failed attempts",
    ["kind"],
    registry=REGISTRY,
)
# -- delivery: the breaker, waiting deliveries, shares, dedupe marks (issue 22) -----
delivery_deferrals = Counter(
    "nudgeflow_delivery_deferrals",
    "Deliveries parked without a call because their destination's circuit was open",
    ["destination"],
    registry=REGISTRY,
)
circuit_failure_ratio = SampledGauge(
    "nudgeflow_circuit_failure_ratio",
    "Failed share of the calls to a destination within the breaker's window",
    ["destination"],
    registry=REGISTRY,
)
delivery_waiting = SampledGauge(
    "nudgeflow_delivery_waiting",
    "Deliveries parked in a destination's wait topic (this worker's partitions)",
    ["destination"],
    registry=REGISTRY,
)
delivery_share = Gauge(
    "nudgeflow_delivery_share",
    "This worker's share of the triggers partitions, hence of every destination's limits",
    registry=REGISTRY,
)
delivered_marks_expired = Counter(
    "nudgeflow_delivered_marks_expired",
    "Webhook dedupe marks removed after the retry horizon (tables/delivered.py)",
    registry=REGISTRY,
)
handling_offloaded = Counter(
    "nudgeflow_handling_offloaded",
    "Engine calls that ran past the inline budget (50 ms) on the event loop and were run "
    "again in a thread, under handling_budget_s",
    registry=REGISTRY,
)
# -- the web server against slow and many clients, and foreign origins (issue 21.3/21.6) --
http_connections = Gauge(
    "nudgeflow_http_connections",
    "Open connections to the web server: admitted, or over a cap (served /health and /ready only)",
    ["kind"],
    registry=REGISTRY,
)
http_connections_refused = Counter(
    "nudgeflow_http_connections_refused",
    "Requests or connections refused by a connection cap: per_client, total, or "
    "fd_ceiling (connection closed, or evicted to make room)",
    ["reason"],
    registry=REGISTRY,
)
http_accept_errors = Counter(
    "nudgeflow_http_accept_errors",
    "socket.accept() failures for lack of file descriptors or memory (logged rate-limited)",
    registry=REGISTRY,
)
http_origin_refused = Counter(
    "nudgeflow_http_origin_refused",
    "Browser requests refused because their Origin is not allowed",
    registry=REGISTRY,
)
# -- journeys: the per-step funnel (issue 18; engine/funnel.py says what counts) ----------
# Labels are the rule and the step's label (its name or index): bounded by the config.
journey_entered = Counter(
    "nudgeflow_journey_entered", "Runs that arrived at a rule's step", ["rule", "step"],
    registry=REGISTRY,
)  # fmt: skip
journey_sent = Counter(
    "nudgeflow_journey_sent", "Messages sent at a rule's step", ["rule", "step"], registry=REGISTRY
)
journey_suppressed = Counter(
    "nudgeflow_journey_suppressed",
    "Sends at a rule's step that were not sent (cap, quiet hours, cooldown, when false, ...); "
    "by reason in nudgeflow_decisions_total",
    ["rule", "step"],
    registry=REGISTRY,
)
journey_exited = Counter(
    "nudgeflow_journey_exited",
    "Runs that ended at a rule's step (exit_on event, exit step, completed, evicted, ...)",
    ["rule", "step"],
    registry=REGISTRY,
)
journey_converted = Counter(
    "nudgeflow_journey_converted",
    "Conversions attributed to the send of a rule's step",
    ["rule", "step"],
    registry=REGISTRY,
)
_JOURNEY = {
    "entered": journey_entered,
    "sent": journey_sent,
    "suppressed": journey_suppressed,
    "exited": journey_exited,
}


def count_journey(action: Trigger | Decision | Conversion) -> None:
    """Count one published decision or conversion in the per-step funnel metrics.

    The evaluate agent calls it for each record it publishes (agents/evaluate.py)."""
    if isinstance(action, Decision):
        step = step_of(action)
        if step is not None and action.outcome != "rearmed":
            for stage, _ in stages(action):
                _JOURNEY[stage].labels(rule=action.rule, step=str(step)).inc()
    elif isinstance(action, Conversion) and action.kind == "conversion" and action.step is not None:
        journey_converted.labels(rule=action.rule, step=str(action.step)).inc()
