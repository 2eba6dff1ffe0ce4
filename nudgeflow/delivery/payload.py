"""The webhook body: flat JSON a Zapier user maps without code (DESIGN §4).

Bytes are deterministic (sorted keys, compact) so a retry signs and sends
exactly what the first attempt sent. Bodies stay under `MAX_BODY_BYTES`:
the rendered message is truncated first, then the largest optional extras
are dropped; the core keys are never removed, so a body is never empty.
"""

from __future__ import annotations

import msgspec

from nudgeflow.engine.actions import Scalar, Trigger

MAX_BODY_BYTES = 20 * 1024
ELLIPSIS = "…"

_CORE_KEYS = frozenset(
    {
        "trigger_id",
        "rule",
        "user_id",
        "variant",
        "step",
        "fired_at",
        "deadline",
        "armed_at",
        "late",
        "lateness_s",
        "message",
    }
)

_encoder = msgspec.json.Encoder(order="sorted")


def _encode(payload: dict[str, Scalar]) -> bytes:
    return _encoder.encode(payload)


def _fit_message(payload: dict[str, Scalar], max_bytes: int) -> bytes | None:
    """Binary-search the longest message prefix that fits; None if nothing fits."""
    whole = _encode(payload)
    if len(whole) <= max_bytes:
        return whole
    message = str(payload.get("message") or "")
    lo, hi, best = 1, len(message), None
    while lo <= hi:
        mid = (lo + hi) // 2
        body = _encode({**payload, "message": message[:mid] + ELLIPSIS})
        if len(body) <= max_bytes:
            best, lo = body, mid + 1
        else:
            hi = mid - 1
    return best


def encode_payload(trigger: Trigger, max_bytes: int = MAX_BODY_BYTES) -> bytes:
    """Trigger -> the exact body bytes that are signed and sent."""
    payload = trigger.to_payload()
    if not payload.get("message"):
        payload["message"] = f"{trigger.rule} for {trigger.user_id}"
    fitted = _fit_message(payload, max_bytes)
    if fitted is not None:
        return fitted
    # Extras alone are too big: drop them, largest first, keeping a short message.
    extras = sorted(
        (k for k in payload if k not in _CORE_KEYS),
        key=lambda k: len(_encode({k: payload[k]})),
        reverse=True,
    )
    for key in extras:
        del payload[key]
        fitted = _fit_message(payload, max_bytes)
        if fitted is not None:
            return fitted
    raise ValueError(f"trigger {trigger.trigger_id}: core fields alone exceed {max_bytes} bytes")
