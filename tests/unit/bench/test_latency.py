"""Latency bookkeeping: which trigger record answers which paced event."""

from __future__ import annotations

import msgspec

from nudgeflow.bench.kafka_io import KeysSeen, Received
from nudgeflow.bench.latency import Pings


def _trigger(key: bytes, trigger_id: str, ts: int) -> Received:
    value = msgspec.json.encode({"trigger_id": trigger_id, "user_id": key.decode()})
    return Received(key=key, value=value, timestamp_ms=ts)


def test_each_event_is_matched_to_its_first_trigger_record() -> None:
    pings = Pings("r1000")
    key0, value0 = pings.make(0, 1_000)
    key1, _ = pings.make(1, 1_010)
    assert msgspec.json.decode(value0) == {
        "event_id": "r10000",
        "user_id": "r1000-0",
        "type": "ping",
        "ts": 1_000,
    }
    timings = pings.timings(
        [
            _trigger(key0, "t0", 1_004),
            _trigger(key0, "t0", 1_900),  # a re-sent duplicate: not a second sample
            _trigger(b"warm-3", "tw", 1_001),  # another run's user: ignored
            _trigger(key1, "t1", 1_030),
        ]
    )
    assert {tid: t.latency_ms for tid, t in timings.items()} == {"t0": 4.0, "t1": 20.0}
    assert timings["t1"].trigger_ms == 1_030


def test_events_without_a_trigger_have_no_sample() -> None:
    pings = Pings("x")
    pings.make(0, 5)
    assert pings.timings([]) == {}


def test_the_reader_stops_once_every_wanted_key_was_seen_counting_each_once() -> None:
    done = KeysSeen({b"a": 1, b"b": 2}, count=2)
    assert done([]) is False
    assert done([_trigger(b"a", "t0", 1), _trigger(b"a", "t0", 2)]) is False  # a twice
    assert done([_trigger(b"other", "tx", 3)]) is False  # not wanted
    assert done([_trigger(b"b", "t1", 4)]) is True  # only the new batch is passed
