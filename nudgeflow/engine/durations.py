"""Durations as people write them in nudgeflow.yaml ("30s", "15m", "2h", "7d").

Everything inside the engine is integer epoch milliseconds, so durations are
parsed once, at load time, into milliseconds. "ms" is accepted for tests and
sub-second tuning; weeks and fractions are not, to keep one obvious spelling.
"""

from __future__ import annotations

import re
from functools import lru_cache

_UNITS_MS = {"ms": 1, "s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
_DURATION = re.compile(r"^\s*(\d{1,9})\s*(ms|s|m|h|d)\s*$")
HINT = "use 30s, 15m, 2h, 7d"


class DurationError(ValueError):
    pass


@lru_cache(maxsize=1024)
def parse_duration(text: str) -> int:
    """'30m' -> 1_800_000. Raises DurationError whose message quotes the input."""
    if not isinstance(text, str):
        raise DurationError(f"invalid duration {text!r} ({HINT})")
    match = _DURATION.match(text)
    if match is None:
        raise DurationError(f"invalid duration {text!r} ({HINT})")
    return int(match.group(1)) * _UNITS_MS[match.group(2)]


def format_duration(ms: int) -> str:
    """The largest exact unit: 1_800_000 -> '30m' (for messages and audit details)."""
    for unit in ("d", "h", "m", "s"):
        size = _UNITS_MS[unit]
        if ms and ms % size == 0:
            return f"{ms // size}{unit}"
    return f"{ms}ms"
