"""Anti-fatigue limits: the global rolling cap and quiet hours in the user's time zone.

Pure functions over epoch milliseconds; the core keeps the fire history and decides
what a suppression means (drop, defer, audit).

Quiet-hours semantics (DST-safe, documented here because wall clocks are not monotonic):

* A window is a pair of local wall-clock times ``[start, end)``; ``start > end`` wraps
  midnight (``21:00``-``08:00`` starts on local day D and ends on D+1); ``start == end``
  means no quiet hours at all.
* Each local day D yields one window *instance*, the instant interval
  ``[resolve(D, start), resolve(D or D+1, end))``. A wall time is resolved to an instant as
  "the first instant at which the local clock reads that time or later":
  - a wall time that does not exist (the spring-forward gap, e.g. 02:30 in New York on
    the second Sunday of March) resolves to the transition instant, when the clock jumps
    past it (03:00 local); a window lying entirely inside the gap is empty that day;
  - a wall time that happens twice (the fall-back hour, e.g. 01:30 in New York on the
    first Sunday of November) resolves to its first occurrence; once the instance has
    ended, the repeated hour does not re-enter quiet hours.
* ``quiet_until`` returns the end of the instance containing ``at_ms`` (the moment a
  deferred message may go out), else None.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

_UTC = dt.UTC
_DAY = dt.timedelta(days=1)
_HOUR_MS = 3_600_000
_DAY_MS = 86_400_000
_EPOCH_ORDINAL = dt.date(1970, 1, 1).toordinal()


@dataclass(frozen=True)
class Cap:
    """At most `count` fires in any rolling window of `per_ms` milliseconds."""

    count: int
    per_ms: int

    def __post_init__(self) -> None:
        if self.count < 0:
            raise ValueError(f"cap count must be >= 0, got {self.count}")
        if self.per_ms <= 0:
            raise ValueError(f"cap window must be > 0 ms, got {self.per_ms}")


def fires_in_window(fire_times_ms: Sequence[int], per_ms: int, at_ms: int) -> list[int]:
    """Fire times inside the rolling window ``(at_ms - per_ms, at_ms]``, in input order.

    The core can use it to prune the stored history: older fires never count again.
    """
    lower = at_ms - per_ms
    return [t for t in fire_times_ms if lower < t <= at_ms]


def cap_allows(fire_times_ms: Sequence[int], cap: Cap, at_ms: int) -> bool:
    """True if one more fire at `at_ms` stays within the cap (rolling, never reset at midnight).

    A fire exactly `per_ms` ago has left the window; one a millisecond younger still counts.
    """
    return len(fires_in_window(fire_times_ms, cap.per_ms, at_ms)) < cap.count


def cap_frees_at(fire_times_ms: Sequence[int], cap: Cap, at_ms: int) -> int | None:
    """Earliest instant >= `at_ms` at which `cap_allows` holds again (None if count is 0).

    Useful to show "capped until ..." in the audit trail or to defer instead of drop.
    """
    if cap.count == 0:
        return None
    inside = sorted(fires_in_window(fire_times_ms, cap.per_ms, at_ms))
    excess = len(inside) - cap.count
    if excess < 0:
        return at_ms
    # The window must shed `excess + 1` fires; the (excess)-th oldest leaves at t + per_ms.
    return inside[excess] + cap.per_ms


@dataclass(frozen=True)
class QuietHours:
    """A daily quiet window in the user's local time; see the module docstring."""

    start: dt.time
    end: dt.time
    action: Literal["defer", "drop"]
    fallback_tz: str = "UTC"

    def __post_init__(self) -> None:
        if self.action not in ("defer", "drop"):
            raise ValueError(f"quiet_hours action must be 'defer' or 'drop', got {self.action!r}")
        if self.start.tzinfo is not None or self.end.tzinfo is not None:
            raise ValueError("quiet_hours start/end are local wall times; give them no tzinfo")
        if _zone_or_none(self.fallback_tz) is None:
            raise ValueError(f"unknown fallback time zone {self.fallback_tz!r}")


@lru_cache(maxsize=1024)
def _zone_or_none(name: str) -> ZoneInfo | None:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, TypeError, OSError):
        return None


def zone_for(tz_name: str | None, fallback_tz: str = "UTC") -> ZoneInfo:
    """The user's IANA zone; a missing, unknown or malformed name gives `fallback_tz`."""
    if isinstance(tz_name, str) and tz_name.strip():
        zone = _zone_or_none(tz_name.strip())
        if zone is not None:
            return zone
    fallback = _zone_or_none(fallback_tz)
    if fallback is None:
        raise ValueError(f"unknown fallback time zone {fallback_tz!r}")
    return fallback


def _resolve_wall(day: dt.date, wall: dt.time, zone: ZoneInfo) -> int:
    """First instant (epoch ms) at which the local clock in `zone` reads `day wall` or later."""
    naive = dt.datetime.combine(day, wall)
    first = naive.replace(tzinfo=zone, fold=0)
    as_utc = first.astimezone(_UTC)
    if as_utc.astimezone(zone).replace(tzinfo=None) == naive:
        return _epoch_ms(as_utc)  # exists; fold=0 is the first occurrence if ambiguous
    # In a gap: fold=1 maps with the post-transition offset (earlier instant), fold=0 with
    # the pre-transition one (later instant); the jump lies between. Bisect to the second.
    lo = int(naive.replace(tzinfo=zone, fold=1).timestamp())
    hi = int(as_utc.timestamp())
    if lo > hi:
        lo, hi = hi, lo
    while hi - lo > 1:
        mid = (lo + hi) // 2
        local = dt.datetime.fromtimestamp(mid, zone).replace(tzinfo=None)
        if local >= naive:
            hi = mid
        else:
            lo = mid
    return hi * 1000


def _epoch_ms(instant: dt.datetime) -> int:
    delta = instant - dt.datetime(1970, 1, 1, tzinfo=_UTC)
    return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000


def quiet_until(at_ms: int, tz_name: str | None, qh: QuietHours) -> int | None:
    """Epoch ms at which the quiet window containing `at_ms` ends, or None if not quiet."""
    if qh.start == qh.end:
        return None
    hour = at_ms // _HOUR_MS
    entry = _BY_QUIET.get(id(qh))
    memo = entry[1] if entry is not None and entry[0] is qh else _hourly(qh)
    windows = memo.get((tz_name, hour))
    if windows is None:
        windows = _windows_in_hour(hour, tz_name, qh)
        if windows is None:  # a UTC-offset change within this hour: ask zoneinfo
            return _quiet_until_exact(at_ms, tz_name, qh)
        if len(memo) >= _HOURLY_MAX:
            memo.clear()
        memo[(tz_name, hour)] = windows
    for begin, finish in windows:
        if begin <= at_ms < finish:
            return finish
    return None


def _quiet_until_exact(at_ms: int, tz_name: str | None, qh: QuietHours) -> int | None:
    zone = _zone_for(tz_name, qh.fallback_tz)
    local_day = dt.datetime.fromtimestamp(at_ms / 1000, zone).date().toordinal()
    for begin, finish in _instances(zone, local_day, qh):
        if begin <= at_ms < finish:
            return finish
    return None


# Per QuietHours (held, so its id cannot be reused), per (zone name, UTC hour): the window
# instances that can hold an instant of that hour. Looked up on every send, it spares the
# zone, offset and instance caches (and hashing the QuietHours) each time.
_HOURLY_MAX = 65_536
_BY_QUIET: dict[
    int, tuple[QuietHours, dict[tuple[str | None, int], tuple[tuple[int, int], ...]]]
] = {}


def _hourly(qh: QuietHours) -> dict[tuple[str | None, int], tuple[tuple[int, int], ...]]:
    entry = _BY_QUIET[id(qh)] = (qh, {})
    return entry[1]


def _windows_in_hour(
    hour: int, tz_name: str | None, qh: QuietHours
) -> tuple[tuple[int, int], ...] | None:
    """The instances of the local days this UTC hour touches (None: the offset changes
    within it). A zone with a fractional-hour offset crosses local midnight inside the
    hour, so both days' instances are kept."""
    zone = _zone_for(tz_name, qh.fallback_tz)
    offset = _steady_offset_ms(zone, hour)
    if offset is None:
        return None
    first = (hour * _HOUR_MS + offset) // _DAY_MS + _EPOCH_ORDINAL
    last = (hour * _HOUR_MS + _HOUR_MS - 1 + offset) // _DAY_MS + _EPOCH_ORDINAL
    windows = _instances(zone, first, qh)
    if last != first:
        windows = tuple(dict.fromkeys(windows + _instances(zone, last, qh)))
    return windows


# Called on every firing: the local day and the window instances around it are
# cached, since they only change when the clock crosses an hour or a day.


@lru_cache(maxsize=1024)
def _zone_for(tz_name: str | None, fallback_tz: str) -> ZoneInfo:
    return zone_for(tz_name, fallback_tz)


@lru_cache(maxsize=16_384)
def _steady_offset_ms(zone: ZoneInfo, hour: int) -> int | None:
    """The zone's UTC offset during this UTC hour, or None if it changes within it."""
    offsets = {
        dt.datetime.fromtimestamp(hour * 3600 + s, zone).utcoffset() for s in (0, 1800, 3599)
    }
    if len(offsets) != 1:
        return None
    offset = offsets.pop()
    assert offset is not None
    return (offset.days * 86_400 + offset.seconds) * 1000 + offset.microseconds // 1000


@lru_cache(maxsize=16_384)
def _instances(zone: ZoneInfo, local_day: int, qh: QuietHours) -> tuple[tuple[int, int], ...]:
    """The window instances of local days D-1, D and D+1, in that (checking) order.

    The instance of day D-1 may still be open (wrapping windows); D+1 only matters
    around zones that turn the clock back across midnight.
    """
    wraps = qh.start > qh.end
    out = []
    for ordinal in (local_day - 1, local_day, local_day + 1):
        day = dt.date.fromordinal(ordinal)
        begin = _resolve_wall(day, qh.start, zone)
        finish = _resolve_wall(day + _DAY if wraps else day, qh.end, zone)
        out.append((begin, finish))
    return tuple(out)


def is_quiet(at_ms: int, tz_name: str | None, qh: QuietHours) -> bool:
    return quiet_until(at_ms, tz_name, qh) is not None


def utc_offset_ms(tz_name: str | None, at_ms: int, fallback_tz: str = "UTC") -> int:
    """The user's UTC offset at `at_ms` (cached per zone and UTC hour, DST-safe)."""
    zone = _zone_for(tz_name, fallback_tz)
    offset = _steady_offset_ms(zone, at_ms // _HOUR_MS)
    if offset is None:  # the offset changes within this hour: ask zoneinfo for the instant
        delta = dt.datetime.fromtimestamp(at_ms / 1000, zone).utcoffset()
        assert delta is not None
        return (delta.days * 86_400 + delta.seconds) * 1000
    return offset
