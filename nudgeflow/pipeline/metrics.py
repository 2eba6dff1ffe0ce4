"""Every Prometheus metric Nudgeflow exports, defined once (DESIGN §5).

Naming follows Prometheus conventions: `nudgeflow_` prefix, base units
(seconds), `_total` counters (prometheus-client appends it), and no user ids,
emails or URLs in labels.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

REGISTRY = CollectorRegistry(auto_describe=True)

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
_LATENESS_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300, 3600)

build_info = Info("nudgeflow_build", "Nudgeflow version", registry=REGISTRY)

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
decisions = Counter(
    "nudgeflow_decisions",
    "Rule decisions by rule and outcome (reason for suppressions)",
    ["rule", "outcome", "reason"],
    registry=REGISTRY,
)
timers_pending = Gauge(
    "nudgeflow_timers_pending", "Users with an armed timer on this worker", registry=REGISTRY
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
consumer_lag = Gauge(
    "nudgeflow_consumer_lag_messages",
    "Messages behind the log end, per topic and partition",
    ["topic", "partition"],
    registry=REGISTRY,
)
