"""What delivery writes to Kafka besides the trigger itself.

* `DeliveryAttempt` -> `<prefix>.deliveries`, one per attempt (the audit).
* `RetryHeaders`    -> headers of a `<prefix>.triggers.retry.N` record; the
  value is the trigger's JSON unchanged, so a retry is the same webhook.
* DLQ headers       -> `<prefix>.triggers.dlq`: reason, last status, attempts,
  first-attempt time, so an operator can tell why and since when.
* `REPLAY_HEADER`   marks a dead letter re-produced by `nudgeflow dlq replay`.
* a parked delivery -> `wait_topic(...)`, with `RetryHeaders` whose `attempt` is
  the number of calls made so far (parking spends none).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass

import msgspec

REPLAY_HEADER = "nudgeflow-replay"

H_DESTINATION = "nudgeflow-destination"
H_ATTEMPT = "nudgeflow-attempt"
H_FIRST_ATTEMPT = "nudgeflow-first-attempt-at"
H_NOT_BEFORE = "nudgeflow-not-before"
H_LAST_STATUS = "nudgeflow-last-status"
H_LAST_ERROR = "nudgeflow-last-error"
H_REASON = "nudgeflow-reason"
H_ATTEMPTS = "nudgeflow-attempts"
H_RULE = "nudgeflow-rule"
H_DEAD_AT = "nudgeflow-dead-at"


class DeliveryAttempt(msgspec.Struct, kw_only=True, omit_defaults=True):
    trigger_id: str
    rule: str
    destination: str
    attempt: int
    outcome: str  # delivered | retry | dead
    latency_s: float
    at: str  # ISO 8601 UTC
    status: int | None = None
    error: str | None = None
    reason: str | None = None


_encoder = msgspec.json.Encoder()


def encode_attempt(record: DeliveryAttempt) -> bytes:
    return _encoder.encode(record)


def _text(headers: Mapping[str, bytes], name: str, default: str = "") -> str:
    raw = headers.get(name)
    return raw.decode() if raw is not None else default


@dataclass(frozen=True)
class RetryHeaders:
    destination: str
    attempt: int  # the attempt that failed; the retry is attempt + 1
    first_attempt_at_ms: int
    not_before_ms: int
    last_status: str
    last_error: str

    def encode(self) -> dict[str, bytes]:
        return {
            H_DESTINATION: self.destination.encode(),
            H_ATTEMPT: str(self.attempt).encode(),
            H_FIRST_ATTEMPT: str(self.first_attempt_at_ms).encode(),
            H_NOT_BEFORE: str(self.not_before_ms).encode(),
            H_LAST_STATUS: self.last_status.encode(),
            H_LAST_ERROR: self.last_error.encode(),
        }

    @classmethod
    def decode(cls, headers: Mapping[str, bytes]) -> RetryHeaders:
        return cls(
            destination=_text(headers, H_DESTINATION),
            attempt=int(_text(headers, H_ATTEMPT, "1")),
            first_attempt_at_ms=int(_text(headers, H_FIRST_ATTEMPT, "0")),
            not_before_ms=int(_text(headers, H_NOT_BEFORE, "0")),
            last_status=_text(headers, H_LAST_STATUS),
            last_error=_text(headers, H_LAST_ERROR),
        )


def dlq_headers(
    *,
    destination: str,
    rule: str,
    reason: str,
    last_status: str,
    attempts: int,
    first_attempt_at_ms: int,
    dead_at_ms: int,
) -> dict[str, bytes]:
    return {
        H_DESTINATION: destination.encode(),
        H_RULE: rule.encode(),
        H_REASON: reason.encode(),
        H_LAST_STATUS: last_status.encode(),
        H_ATTEMPTS: str(attempts).encode(),
        H_FIRST_ATTEMPT: str(first_attempt_at_ms).encode(),
        H_DEAD_AT: str(dead_at_ms).encode(),
    }


def header_text(headers: Mapping[str, bytes] | None, name: str) -> str | None:
    if not headers:
        return None
    raw = headers.get(name)
    return raw.decode() if raw is not None else None


_TOPIC_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def wait_topic(prefix: str, destination: str) -> str:
    """`<prefix>.triggers.wait.<destination>`: deliveries parked while its circuit is open.

    One topic per destination, so a destination that stays down holds up no other's
    parked deliveries. A name with characters Kafka refuses gets them replaced and a
    short hash of the real name appended (two names never share a topic).
    """
    safe = _TOPIC_UNSAFE.sub("_", destination)
    if safe != destination:
        safe = f"{safe}-{hashlib.sha256(destination.encode()).hexdigest()[:8]}"
    return f"{prefix}.triggers.wait.{safe}"
