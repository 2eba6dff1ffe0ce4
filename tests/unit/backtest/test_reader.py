"""The JSONL reader: streams events, counts bad lines by reason, never stops on one."""

from __future__ import annotations

import gzip
from pathlib import Path

from nudgeflow.backtest.reader import MAX_SAMPLES, ReadStats, parse_lines, read_events
from nudgeflow.events.model import Event

GOOD = b'{"user_id":"u1","type":"cart_add","ts":1717372800000,"properties":{"price":60}}\n'


def test_reads_good_lines_and_counts_bad_ones_by_reason(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    path.write_bytes(
        GOOD
        + b"not json\n"
        + b"\n"
        + b'{"user_id":"u2","type":"login","ts":"2024-06-03T00:00:01Z","event_id":"e2"}\n'
        + b'{"type":"login","ts":1717372800000}\n'
        + b'{"user_id":"u3","type":"Bad Type","ts":1717372800000}\n'
        + b"[1,2]\n"
    )
    stats = ReadStats()
    events = list(read_events(path, stats))
    assert events == [
        Event(user_id="u1", type="cart_add", ts=1717372800000, properties={"price": 60}),
        Event(user_id="u2", type="login", ts=1717372801000, event_id="e2"),
    ]
    assert stats.lines == 7
    assert stats.events == 2
    assert stats.blank == 1
    assert stats.rejected_total == 4
    assert stats.rejected["invalid_json"] == 1
    assert [s.line for s in stats.samples] == [2, 5, 6, 7]
    assert stats.samples[1].field == "user_id"
    assert stats.samples[2].field == "type"


def test_reads_gzip(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl.gz"
    with gzip.open(path, "wb") as f:
        f.write(GOOD * 3)
    stats = ReadStats()
    assert [e.user_id for e in read_events(path, stats)] == ["u1"] * 3
    assert stats.rejected_total == 0


def test_keeps_only_the_first_samples_but_counts_all() -> None:
    stats = ReadStats()
    lines = [b"{}\n"] * (MAX_SAMPLES + 10) + [GOOD]
    assert len(list(parse_lines(iter(lines), stats))) == 1
    assert stats.rejected_total == MAX_SAMPLES + 10
    assert len(stats.samples) == MAX_SAMPLES
    assert stats.samples[0].line == 1


def test_is_lazy() -> None:
    """A consumer that stops early never pulls the rest: the file is streamed."""
    pulled = 0

    def lines():  # type: ignore[no-untyped-def]
        nonlocal pulled
        while True:
            pulled += 1
            yield GOOD

    events = parse_lines(lines(), ReadStats())
    for _ in range(3):
        next(events)
    assert pulled == 3
