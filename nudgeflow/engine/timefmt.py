"""Epoch milliseconds -> ISO 8601 UTC with milliseconds and 'Z' (DESIGN §4).

Called for every decision, so the date part is cached per day and the time of
day is plain integer arithmetic (datetime formatting is ~10x slower).
"""

from __future__ import annotations

import datetime as dt
from functools import lru_cache

_DAY_MS = 86_400_000
_EPOCH = dt.date(1970, 1, 1)


@lru_cache(maxsize=4096)
def _date(day: int) -> str:
    return (_EPOCH + dt.timedelta(days=day)).isoformat()


def iso_utc(ms: int) -> str:
    """1700000000123 -> '2023-11-14T22:13:20.123Z' (exact; no float rounding)."""
    day, rest = divmod(ms, _DAY_MS)
    secs, milli = divmod(rest, 1000)
    hours, secs = divmod(secs, 3600)
    minutes, secs = divmod(secs, 60)
    return f"{_date(day)}T{hours:02d}:{minutes:02d}:{secs:02d}.{milli:03d}Z"
