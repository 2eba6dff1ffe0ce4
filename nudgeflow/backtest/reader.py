"""Stream events from a JSONL file (optionally gzip-compressed) for the backtest.

The file is read line by line, never loaded whole, so a backtest of millions
of events runs in constant memory. A bad line is counted by reason (like the
live DLQ would) and skipped: one typo must not void a day-long replay.
"""

from __future__ import annotations

import gzip
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, cast

from nudgeflow.events.model import Event
from nudgeflow.events.parse import EventError, parse_event

MAX_SAMPLES = 5


@dataclass(frozen=True, slots=True)
class RejectedLine:
    line: int
    reason: str
    field: str | None
    error: str


@dataclass(slots=True)
class ReadStats:
    """What the reader saw: lines, accepted events and rejections by reason."""

    lines: int = 0
    events: int = 0
    blank: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    samples: list[RejectedLine] = field(default_factory=list)

    @property
    def rejected_total(self) -> int:
        return sum(self.rejected.values())

    def reject(self, line: int, reason: str, field_name: str | None, error: str) -> None:
        self.rejected[reason] += 1
        if len(self.samples) < MAX_SAMPLES:
            self.samples.append(RejectedLine(line, reason, field_name, error))


def open_lines(path: Path) -> IO[bytes]:
    """Open a .jsonl or .jsonl.gz file for binary line iteration."""
    if path.suffix == ".gz":
        return cast(IO[bytes], gzip.open(path, "rb"))
    return open(path, "rb", buffering=1 << 20)


def read_events(path: Path | str, stats: ReadStats) -> Iterator[Event]:
    """Yield each valid event of the file in file order; count the rest in `stats`."""
    with open_lines(Path(path)) as lines:
        yield from parse_lines(lines, stats)


def parse_lines(lines: Iterator[bytes] | IO[bytes], stats: ReadStats) -> Iterator[Event]:
    """Parse an iterable of raw JSON lines (file order is line order)."""
    for number, raw in enumerate(lines, start=1):
        stats.lines = number
        if not raw.strip():
            stats.blank += 1
            continue
        try:
            event = parse_event(raw, now_ms=None)
        except EventError as exc:
            stats.reject(number, exc.reason, exc.field, str(exc))
            continue
        stats.events += 1
        yield event
