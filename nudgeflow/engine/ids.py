"""Deterministic trigger ids (DESIGN §4).

The id is a hash of what identifies one firing: rule, user, the arming event
(its producer id, or its timestamp when it had none) and the series step. A
retry, a replay or a re-run after a crash recomputes the same id, so the
receiver (webhook-id header) and the delivery dedupe can recognise it.
"""

from __future__ import annotations

import hashlib

PREFIX = "trg_"


def arming_key(event_id: str | None, ts_ms: int) -> str:
    return f"id:{event_id}" if event_id is not None else f"ts:{ts_ms}"


def trigger_id(rule: str, user_id: str, arming: str, step: int) -> str:
    """'trg_' + 24 hex chars (96 bits): same inputs, same id, on every worker."""
    raw = "\x1f".join((rule, user_id, arming, str(step))).encode()
    return PREFIX + hashlib.blake2b(raw, digest_size=12).hexdigest()
