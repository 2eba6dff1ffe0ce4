"""The erasure records and the forgotten marker (tables/erasure.py)."""

from __future__ import annotations

from typing import Any

from nudgeflow.tables import erasure


class Table(dict[bytes, bytes]):
    data: Any = None


def test_the_audit_hash_is_keyed_and_names_no_one() -> None:
    h = erasure.user_hash(b"secret", b"ana@example.com")
    assert h == erasure.user_hash(b"secret", b"ana@example.com")
    assert h != erasure.user_hash(b"other", b"ana@example.com")
    assert "ana" not in h and len(h) == 64


def test_requests_and_headers() -> None:
    assert erasure.decode_request(erasure.encode_request(123)) == 123
    assert erasure.decode_request(b"not json") is None
    assert erasure.decode_request(None) is None
    assert erasure.decode_request(b'{"requested_at": true}') is None
    assert erasure.has_header([("nudgeflow-erase", b"1")], erasure.ERASE_HEADER)
    assert erasure.has_header({"nudgeflow-forget": b"1"}, erasure.FORGET_HEADER)
    assert not erasure.has_header(None, erasure.ERASE_HEADER)
    assert not erasure.has_header([("other", b"1")], erasure.ERASE_HEADER)


def test_the_marker_keeps_the_latest_time_and_not_the_id() -> None:
    table = Table()
    assert erasure.forgotten_since(table, b"ana") is None
    erasure.forget(table, b"ana", 1_000, 60_000)
    erasure.forget(table, b"ana", 2_000, 60_000)
    assert erasure.forgotten_since(table, b"ana") == 2_000
    assert erasure.forgotten_since(table, b"bob") is None
    assert not any(b"ana" in key for key in table)
    filed = [k for k in table if k.startswith(b"\x00")]
    assert len(filed) == 1  # one expiry entry: it goes with the delivery marks
