"""Where a long-running worker's Python memory goes, asked for while it runs.

`NUDGEFLOW_TRACEMALLOC=<frames>` starts `tracemalloc` when the worker starts; every
SIGUSR2 then logs the allocation sites that grew most since the previous SIGUSR2 (or the
start), with their sizes and block counts, and the traced total. Off by default: tracing
slows every allocation. Without it, SIGUSR2 logs how to turn it on (mode's default for
the signal, a pdb prompt, would stop the event loop of a worker that has no terminal).
The RSS question it was built for: docs/reliability.md, "Bounded dedupe memory".
"""

from __future__ import annotations

import logging
import os
import tracemalloc

log = logging.getLogger(__name__)

ENV = "NUDGEFLOW_TRACEMALLOC"
TOP = 25  # sites per report


class HeapTrace:
    """The snapshot to compare the next one with; None while tracing is off."""

    def __init__(self, frames: int) -> None:
        self.frames = frames
        self._last: tracemalloc.Snapshot | None = None

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> HeapTrace:
        """Frames from the environment; 0 (off) when unset. A bad value is an error that
        names the variable, at start, not a silent 'off'."""
        raw = (os.environ if environ is None else environ).get(ENV, "").strip()
        if not raw:
            return cls(0)
        if not raw.isdigit() or not 1 <= int(raw) <= 100:
            raise ValueError(f"{ENV} must be a number of frames from 1 to 100, not {raw!r}")
        return cls(int(raw))

    def start(self) -> None:
        if self.frames and not tracemalloc.is_tracing():
            tracemalloc.start(self.frames)
            self._last = self._snapshot()
            log.info("tracemalloc on (%d frames); SIGUSR2 logs what grew", self.frames)

    def report(self) -> str:
        """The top growth since the previous report, as log text."""
        if not tracemalloc.is_tracing():
            return f"heap tracing is off; start the worker with {ENV}=<frames> to trace"
        now = self._snapshot()
        before = self._last or now
        self._last = now
        stats = now.compare_to(before, "traceback" if self.frames > 1 else "lineno")
        current, peak = tracemalloc.get_traced_memory()
        lines = [f"heap traced {current / 2**20:.1f} MB (peak {peak / 2**20:.1f} MB); grew:"]
        for stat in stats[:TOP]:
            where = " <- ".join(f"{f.filename}:{f.lineno}" for f in stat.traceback)
            lines.append(
                f"  {stat.size_diff / 1024:+.1f} KiB ({stat.count_diff:+d} blocks) "
                f"now {stat.size / 1024:.1f} KiB: {where}"
            )
        return "\n".join(lines)

    @staticmethod
    def _snapshot() -> tracemalloc.Snapshot:
        return tracemalloc.take_snapshot().filter_traces(
            [tracemalloc.Filter(False, tracemalloc.__file__)]
        )
