"""Attribution metrics (issue 19.4): every rule's conversions and their revenue.

Per rule, step and variant (all bounded by the config; no user ids), counted from
each `Conversion` record the evaluate agent publishes (agents/evaluate.py), with
the opens, clicks and conversions by kind that `nudgeflow_experiment_conversions`
has always counted. Registered in the one registry of observability/metrics.py.
"""

from __future__ import annotations

from prometheus_client import Counter

from nudgeflow.engine.actions import Conversion
from nudgeflow.observability.metrics import REGISTRY, experiment_conversions

_LABELS = ["rule", "step", "variant"]

conversions = Counter(
    "nudgeflow_conversions",
    "Conversions attributed to a rule's latest send (last send wins), by rule, step, variant",
    _LABELS,
    registry=REGISTRY,
)
conversion_revenue = Counter(
    "nudgeflow_conversion_revenue",
    "Revenue of the attributed conversions (properties.revenue, total or value)",
    _LABELS,
    registry=REGISTRY,
)


def count_conversion(c: Conversion) -> None:
    """One published conversion, open or click."""
    experiment_conversions.labels(rule=c.rule, variant=c.variant, kind=c.kind).inc()
    if c.kind == "conversion":
        conversions.labels(c.rule, str(c.step), c.variant).inc()
        if c.revenue is not None and c.revenue > 0:  # a counter only goes up (refunds: no)
            conversion_revenue.labels(c.rule, str(c.step), c.variant).inc(c.revenue)
