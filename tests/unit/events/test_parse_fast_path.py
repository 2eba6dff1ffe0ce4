"""The typed-decoding fast path of `parse_event` gives exactly the general path's answer."""

from __future__ import annotations

import pytest

from nudgeflow.events.model import Event
from nudgeflow.events.parse import DEFAULT_LIMITS, EventError, _fast_path, parse_event

NOW = 1_717_372_800_000

CASES = [
    b'{"user_id":"u1","type":"cart_add","ts":1717372800000}',
    b'{"user_id":"u1","type":"cart_add","ts":1717372800000,"event_id":"e1",'
    b'"properties":{"price":9.5,"tags":["a"]},"traits":{"tz":"UTC"},"context":{"x":1}}',
    b'{"user_id":"a","user_id":"b","type":"x","ts":1717372800000}',  # last key wins
    b'{"user_id":42,"type":"cart_add","ts":1717372800000}',  # integer id: general path
    b'{"user_id":"u1","type":"cart_add","ts":"2024-06-03T00:00:00Z"}',  # ISO time
    b'{"user_id":"u1","type":"cart_add","ts":1717372800000.7}',
    b'{"user_id":"u1","type":"cart_add","ts":1717372800000,"properties":null}',
    b'\xef\xbb\xbf{"user_id":"u1","type":"cart_add","ts":1717372800000}',  # BOM
    b'{"user_id":"u1","type":"CartAdd","ts":1717372800000}',
    b'{"user_id":" ","type":"cart_add","ts":1717372800000}',
    b'{"user_id":"u\\u0001","type":"cart_add","ts":1717372800000}',
    b'{"user_id":"u1","type":"cart_add","ts":1717372800}',  # epoch seconds
    b'{"user_id":"u1","type":"cart_add","ts":1617372800000}',  # older than a year
    b'{"user_id":"u1","type":"cart_add","ts":true}',
    b'{"user_id":"u1","type":"cart_add"}',
    b'{"user_id":"u1","type":"cart_add","ts":1717372800000,"properties":'
    + b'{"a":' * 17
    + b"1"
    + b"}" * 17
    + b"}",
    b'{"user_id":"u1","type":"cart_add","ts":1717372800000,"event_id":""}',
    b"[1, 2]",
    b"not json",
]


def _general(raw: bytes, now_ms: int | None) -> Event | tuple[str, str | None, str]:
    try:
        return parse_event(bytearray(raw), now_ms=now_ms)  # bytearray: never the fast path
    except EventError as exc:
        return exc.reason, exc.field, exc.message


@pytest.mark.parametrize("raw", CASES)
@pytest.mark.parametrize("now_ms", [None, NOW])
def test_fast_path_agrees_with_the_general_path(raw: bytes, now_ms: int | None) -> None:
    try:
        got: Event | tuple[str, str | None, str] = parse_event(raw, now_ms=now_ms)
    except EventError as exc:
        got = exc.reason, exc.field, exc.message
    assert got == _general(raw, now_ms)


def test_common_events_take_the_fast_path() -> None:
    assert _fast_path(CASES[1], NOW, DEFAULT_LIMITS) == _general(CASES[1], NOW)
    assert _fast_path(CASES[3], NOW, DEFAULT_LIMITS) is None  # integer user id: general path
