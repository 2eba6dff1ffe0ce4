"""Deterministic trigger ids (DESIGN §4, §3.1).

The id is a hash of what identifies one send: rule, user, the arming event (its
producer id, or its timestamp when it had none), the step (its label: the series
index for the old forms, the name or index of a journey's send) and, for journeys,
the run's instance and how many times it looped. A retry, a replay or a re-run after
a crash recomputes the same id, so the receiver (webhook-id header) and the delivery
dedupe can recognise it. Instance and loops join the hash only when set, so the old
forms keep the ids they always had.
"""

from __future__ import annotations

import hashlib

PREFIX = "trg_"


def arming_key(event_id: str | None, ts_ms: int) -> str:
    return f"id:{event_id}" if event_id is not None else f"ts:{ts_ms}"


def trigger_id(
    rule: str, user_id: str, arming: str, step: int | str, instance: str = "", loops: int = 0
) -> str:
    """'trg_' + 24 hex chars (96 bits): same inputs, same id, on every worker."""
    if instance or loops:
        parts = [rule, user_id, arming, str(step)]
        if instance:
            parts.append("i:" + instance)
        if loops:
            parts.append(f"l:{loops}")
        raw = "\x1f".join(parts).encode()
    else:
        raw = "\x1f".join((rule, user_id, arming, str(step))).encode()
    return PREFIX + hashlib.blake2b(raw, digest_size=12).hexdigest()
