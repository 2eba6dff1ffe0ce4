import msgspec

from nudgeflow.delivery.records import (
    DeliveryAttempt,
    RetryHeaders,
    dlq_headers,
    encode_attempt,
    header_text,
)


def test_retry_headers_round_trip() -> None:
    meta = RetryHeaders("zapier", 2, 1_700_000_000_000, 1_700_000_005_000, "503", "status_503")
    assert RetryHeaders.decode(meta.encode()) == meta


def test_dlq_headers_carry_reason_status_attempts_first_attempt() -> None:
    h = dlq_headers(
        destination="zapier",
        rule="abandoned_cart",
        reason="retries_exhausted",
        last_status="503",
        attempts=4,
        first_attempt_at_ms=123,
        dead_at_ms=456,
    )
    assert header_text(h, "nudgeflow-reason") == "retries_exhausted"
    assert header_text(h, "nudgeflow-last-status") == "503"
    assert header_text(h, "nudgeflow-attempts") == "4"
    assert header_text(h, "nudgeflow-first-attempt-at") == "123"
    assert header_text(h, "nudgeflow-missing") is None


def test_attempt_record_omits_absent_fields() -> None:
    rec = DeliveryAttempt(
        trigger_id="t",
        rule="r",
        destination="d",
        attempt=1,
        outcome="retry",
        latency_s=0.5,
        at="2026-01-01T00:00:00Z",
        error="timeout",
        reason="timeout",
    )
    decoded = msgspec.json.decode(encode_attempt(rec))
    assert decoded["error"] == "timeout" and "status" not in decoded
