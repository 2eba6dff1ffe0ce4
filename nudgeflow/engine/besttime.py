"""Best-time sends: a per-user, exponentially decayed hour-of-week activity histogram.

`send_at: {best_hour: true, within: D}` sends at the hour of the week at which this
user has been most active among the hours that begin within D (the current one
included); if the user was never active in any of them, at once (DESIGN §3.1: "if it
falls within D"; a daily habit spreads over seven buckets, so the single best hour
of the week would rarely fall within a day and `within` would mean little).

The histogram has 168 buckets (Monday 00:00 local = 0) in the user's
`traits.timezone`, fed by the events in `EVENTS` (opens, clicks, sessions, views).

Decay without touching every bucket on every event: an event at time t adds
`UNIT * 2^((t - ref) / HALF_LIFE)` to its bucket, i.e. newer events weigh more by
exactly the decay factor; comparing buckets needs no common rescaling, so only one
bucket changes. When a weight outgrows the 16-bit range, every bucket is halved and
`ref` moves one half-life on (what was tiny rounds to 0: decayed away). The state
keeps 168 uint16 as 336 bytes, little-endian: fixed size, one msgpack bin.
"""

from __future__ import annotations

import sys
from array import array
from dataclasses import dataclass
from typing import Any

import msgspec

from nudgeflow.engine.limits import utc_offset_ms
from nudgeflow.engine.timefmt import iso_utc

HOURS = 168
HOUR_MS = 3_600_000
HALF_LIFE_MS = 14 * 86_400_000
UNIT = 64  # weight of one event at `ref`
_CEILING = 65_535
_MAX_WEIGHT = UNIT * 256  # past this, rescale rather than let one event dwarf the rest
EVENTS = frozenset(
    {
        "message_opened",
        "message_clicked",
        "login",
        "session_start",
        "app_open",
        "page_view",
        "product_view",
    }
)
_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")


class BestTime(msgspec.Struct, array_like=True):
    ref: int  # epoch ms the weights are relative to
    counts: bytes  # HOURS little-endian uint16
    hour: int = 0  # the latest epoch hour counted: an hour of activity counts once


def _load(data: bytes) -> array[int]:
    counts = array("H", data)
    if sys.byteorder == "big":
        counts.byteswap()
    return counts


def _dump(counts: array[int]) -> bytes:
    if sys.byteorder == "big":
        counts = array("H", counts)
        counts.byteswap()
    return counts.tobytes()


def hour_of_week(at_ms: int, tz: str | None, fallback_tz: str = "UTC") -> int:
    """0 = Monday 00:00-00:59 local ... 167 = Sunday 23:00-23:59 local."""
    hours = (at_ms + utc_offset_ms(tz, at_ms, fallback_tz)) // HOUR_MS
    return ((hours // 24 + 3) % 7) * 24 + hours % 24  # 1970-01-01 was a Thursday


def record(bt: BestTime | None, at_ms: int, tz: str | None, fallback_tz: str = "UTC") -> BestTime:
    """The histogram with the hour of `at_ms` counted (a new value; `bt` is not changed).

    Each hour with activity counts once (a session of thirty views is one active hour,
    not thirty), which also makes a burst of events cost one comparison each."""
    epoch_hour = at_ms // HOUR_MS
    if bt is not None and epoch_hour == bt.hour:
        return bt
    if bt is None:
        counts, ref = array("H", bytes(2 * HOURS)), at_ms
    else:
        counts, ref = _load(bt.counts), bt.ref
    weight = UNIT * 2.0 ** ((at_ms - ref) / HALF_LIFE_MS)
    bucket = hour_of_week(at_ms, tz, fallback_tz)
    while weight > _MAX_WEIGHT or counts[bucket] + weight > _CEILING:
        for i in range(HOURS):
            counts[i] >>= 1
        ref += HALF_LIFE_MS
        weight /= 2
    add = round(weight)
    latest = max(epoch_hour, bt.hour) if bt is not None else epoch_hour
    if add == 0:  # so old that it has decayed away already
        return bt if bt is not None else BestTime(ref, _dump(counts), latest)
    counts[bucket] += add
    return BestTime(ref, _dump(counts), latest)


def best_hours(bt: BestTime | None, n: int = 3) -> list[tuple[int, float]]:
    """The `n` most active hours of the week, (bucket, share of all weight), best first;
    ties go to the earlier hour of the week."""
    if bt is None:
        return []
    counts = _load(bt.counts)
    total = sum(counts)
    if total == 0:
        return []
    ranked = sorted((c, -i) for i, c in enumerate(counts) if c)[::-1][:n]
    return [(-neg, round(c / total, 4)) for c, neg in ranked]


def label(bucket: int) -> str:
    """'Tue 19:00' for bucket 43."""
    return f"{_DAYS[bucket // 24]} {bucket % 24:02d}:00"


@dataclass(frozen=True, slots=True)
class Timing:
    """When a best-time send goes, and why (a decision detail)."""

    send_ms: int
    why: str  # best_hour | best_hour_now | no_activity_in_window | no_history
    best: int | None  # the best bucket, if any

    def detail(self) -> dict[str, str | int | float | bool | None]:
        return {
            "timing": self.why,
            "best_hour": label(self.best) if self.best is not None else None,
            "send_at": iso_utc(self.send_ms),
        }


def timing(
    bt: BestTime | None, at_ms: int, within_ms: int, tz: str | None, fallback_tz: str = "UTC"
) -> Timing:
    """The start of the most active hour of the week that begins within `within_ms`
    (this hour counts, at once); ties go to the sooner. No activity in any of those
    hours: at once. Each hour's bucket is read at its own instant, so a DST change
    inside the window moves nothing."""
    if bt is None:
        return Timing(at_ms, "no_history", None)
    counts = _load(bt.counts)
    offset = utc_offset_ms(tz, at_ms, fallback_tz)
    hour_start = at_ms - (at_ms + offset) % HOUR_MS
    hours = min(HOURS - 1, max(0, (at_ms + within_ms - hour_start) // HOUR_MS))
    steady = utc_offset_ms(tz, hour_start + hours * HOUR_MS, fallback_tz) == offset
    first = hour_of_week(at_ms, tz, fallback_tz)
    best, best_at, weight = None, at_ms, 0
    for k in range(hours + 1):
        start = at_ms if k == 0 else hour_start + k * HOUR_MS
        # one offset all through the window: the buckets follow on; else ask per hour (DST)
        bucket = (first + k) % HOURS if steady else hour_of_week(start, tz, fallback_tz)
        if counts[bucket] > weight:
            best, best_at, weight = bucket, start, counts[bucket]
    if best is None:
        return Timing(at_ms, "no_activity_in_window" if any(counts) else "no_history", None)
    return Timing(best_at, "best_hour_now" if best_at == at_ms else "best_hour", best)


def describe(bt: BestTime | None, tz: str | None, n: int = 3) -> dict[str, Any]:
    """For GET /users/<id> and `nudgeflow explain`: the best hours, in the user's zone."""
    return {
        "timezone": tz or "UTC",
        "half_life_days": HALF_LIFE_MS // 86_400_000,
        "best_hours": [
            {"hour": label(b), "hour_of_week": b, "share": share} for b, share in best_hours(bt, n)
        ],
    }
