"""The wall clock, read in one place.

The engine never reads a clock (it is given `now`); the shell asks here, in epoch
milliseconds, the unit of every timestamp Nudgeflow stores or sends.
"""

from __future__ import annotations

import time


def now_ms() -> int:
    """Wall-clock time in epoch milliseconds."""
    return int(time.time() * 1000)
