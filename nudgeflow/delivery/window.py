"""Calls and failures over a sliding time window, in buckets (pure; the caller passes `now`).

The window is `window_s` long, cut into `buckets` equal slices: a count leaves the
window at most one slice late, and memory is a few tuples however many calls are
made. The breaker (delivery/breaker.py) asks it for the volume and the ratio.
"""

from __future__ import annotations

from collections import deque

DEFAULT_BUCKETS = 20


class FailureWindow:
    def __init__(self, window_s: float, buckets: int = DEFAULT_BUCKETS) -> None:
        self.window_s = window_s
        self.slice_s = window_s / buckets
        self._slices: deque[list[float]] = deque()  # [slice start, calls, failures]
        self._calls = 0
        self._failures = 0

    def _expire(self, now: float) -> None:
        while self._slices and self._slices[0][0] <= now - self.window_s:
            _, calls, failures = self._slices.popleft()
            self._calls -= int(calls)
            self._failures -= int(failures)

    def record(self, ok: bool, now: float) -> None:
        self._expire(now)
        start = now - now % self.slice_s
        if not self._slices or self._slices[-1][0] != start:
            self._slices.append([start, 0, 0])
        last = self._slices[-1]
        last[1] += 1
        self._calls += 1
        if not ok:
            last[2] += 1
            self._failures += 1

    def counts(self, now: float) -> tuple[int, int]:
        """(calls, failures) within the window."""
        self._expire(now)
        return self._calls, self._failures

    def ratio(self, now: float) -> float:
        """Failed share of the calls in the window (0.0 when there were none)."""
        calls, failures = self.counts(now)
        return failures / calls if calls else 0.0

    def clear(self) -> None:
        self._slices.clear()
        self._calls = self._failures = 0
