"""The evaluate agent's batches (agents/batch.py): how many, and how many records in them.

Records per batch = batched_records / batches. Registered in the one registry of
observability/metrics.py.
"""

from __future__ import annotations

from prometheus_client import Counter

from nudgeflow.observability.metrics import REGISTRY

batches_taken = Counter(
    "nudgeflow_evaluate_batches",
    "Batches the evaluate agent handled (records per batch: batched_records / batches)",
    registry=REGISTRY,
)
batched_records = Counter(
    "nudgeflow_evaluate_batched_records",
    "Records the evaluate agent handled in batches (agents/batch.py)",
    registry=REGISTRY,
)
