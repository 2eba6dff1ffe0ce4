"""Global rolling cap and quiet hours (user time zone, DST, east and west of UTC)."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nudgeflow.engine.limits import (
    Cap,
    QuietHours,
    _quiet_until_exact,
    cap_allows,
    cap_frees_at,
    fires_in_window,
    is_quiet,
    quiet_until,
    zone_for,
)

HOUR = 3_600_000
DAY = 24 * HOUR


def ms(iso: str) -> int:
    """Epoch ms of an ISO time with explicit offset."""
    return int(dt.datetime.fromisoformat(iso).timestamp() * 1000)


def qh(start: str, end: str, action: str = "defer", fallback: str = "UTC") -> QuietHours:
    return QuietHours(dt.time.fromisoformat(start), dt.time.fromisoformat(end), action, fallback)  # type: ignore[arg-type]


NIGHT = qh("21:00", "08:00")


# --- rolling cap -------------------------------------------------------------------------


def test_fire_exactly_one_window_ago_has_left_the_window() -> None:
    cap = Cap(count=1, per_ms=DAY)
    assert cap_allows([0], cap, at_ms=DAY)  # boundary: (at - per, at] excludes 0
    assert not cap_allows([0], cap, at_ms=DAY - 1)  # just inside
    assert cap_allows([0], cap, at_ms=DAY + 1)  # just outside


def test_count_fires_up_to_the_limit() -> None:
    cap = Cap(count=3, per_ms=DAY)
    fires = [1_000, 2_000]
    assert cap_allows(fires, cap, at_ms=3_000)
    assert not cap_allows([*fires, 3_000], cap, at_ms=3_000)  # a fire at `at` counts
    assert cap_allows([*fires, 3_000], cap, at_ms=1_000 + DAY)  # oldest just left


def test_cap_is_rolling_not_reset_at_midnight() -> None:
    cap = Cap(count=2, per_ms=DAY)
    fires = [ms("2024-05-01T23:00:00+00:00"), ms("2024-05-01T23:30:00+00:00")]
    assert not cap_allows(fires, cap, ms("2024-05-02T00:30:00+00:00"))
    assert not cap_allows(fires, cap, ms("2024-05-02T22:59:59+00:00"))
    assert cap_allows(fires, cap, ms("2024-05-02T23:00:00+00:00"))


def test_future_fires_are_outside_the_window_and_zero_cap_never_allows() -> None:
    assert cap_allows([5_000], Cap(1, 1_000), at_ms=4_000)
    assert not cap_allows([], Cap(0, 1_000), at_ms=4_000)
    assert fires_in_window([1, 500, 1_001, 1_500], 1_000, 1_001) == [500, 1_001]


def test_cap_frees_at_the_moment_enough_fires_age_out() -> None:
    cap = Cap(count=2, per_ms=DAY)
    assert cap_frees_at([10, 20], cap, at_ms=100) == 10 + DAY
    assert cap_frees_at([10, 20, 30], cap, at_ms=100) == 20 + DAY
    assert cap_frees_at([10], cap, at_ms=100) == 100
    assert cap_frees_at([10], Cap(0, DAY), at_ms=100) is None
    frees = cap_frees_at([10, 20, 30], cap, at_ms=100)
    assert frees is not None
    assert cap_allows([10, 20, 30], cap, frees)
    assert not cap_allows([10, 20, 30], cap, frees - 1)


@pytest.mark.parametrize("count,per", [(-1, 1_000), (1, 0), (1, -5)])
def test_invalid_caps_are_rejected(count: int, per: int) -> None:
    with pytest.raises(ValueError):
        Cap(count, per)


# --- quiet hours: plain days --------------------------------------------------------------


def test_window_wrapping_midnight_in_utc() -> None:
    assert quiet_until(ms("2024-05-01T22:00:00+00:00"), "UTC", NIGHT) == ms(
        "2024-05-02T08:00:00+00:00"
    )
    assert quiet_until(ms("2024-05-02T07:59:59.999+00:00"), "UTC", NIGHT) == ms(
        "2024-05-02T08:00:00+00:00"
    )
    assert quiet_until(ms("2024-05-01T21:00:00+00:00"), "UTC", NIGHT) is not None  # start incl.
    assert quiet_until(ms("2024-05-02T08:00:00+00:00"), "UTC", NIGHT) is None  # end excluded
    assert quiet_until(ms("2024-05-01T20:59:59.999+00:00"), "UTC", NIGHT) is None
    assert quiet_until(ms("2024-05-01T12:00:00+00:00"), "UTC", NIGHT) is None


def test_window_within_one_day() -> None:
    lunch = qh("12:00", "13:30")
    assert quiet_until(ms("2024-05-01T12:45:00+00:00"), None, lunch) == ms(
        "2024-05-01T13:30:00+00:00"
    )
    assert quiet_until(ms("2024-05-01T11:59:00+00:00"), None, lunch) is None
    assert quiet_until(ms("2024-05-01T13:30:00+00:00"), None, lunch) is None


def test_equal_start_and_end_means_no_quiet_hours() -> None:
    assert not is_quiet(ms("2024-05-01T22:00:00+00:00"), "UTC", qh("22:00", "22:00"))


@pytest.mark.parametrize(
    "tz,at,until",
    [
        # east of UTC, no DST: 21:30 JST is 12:30Z; 08:00 JST next morning is 23:00Z
        ("Asia/Tokyo", "2024-06-01T12:30:00+00:00", "2024-06-01T23:00:00+00:00"),
        # the same instant is 05:30 PDT in Los Angeles: quiet until 08:00 PDT = 15:00Z
        ("America/Los_Angeles", "2024-06-01T12:30:00+00:00", "2024-06-01T15:00:00+00:00"),
        # west of UTC: 22:00 PDT is 05:00Z next UTC day; window ends 08:00 PDT = 15:00Z
        ("America/Los_Angeles", "2024-07-01T05:00:00+00:00", "2024-07-01T15:00:00+00:00"),
        # a Tokyo user is awake then (14:00 JST)
        ("Asia/Tokyo", "2024-07-01T05:00:00+00:00", None),
        # southern hemisphere in (their) summer time: 23:00 AEDT = 12:00Z, ends 21:00Z
        ("Australia/Sydney", "2024-01-15T12:00:00+00:00", "2024-01-15T21:00:00+00:00"),
        # ... and in their winter (standard time, +10): 23:00 AEST = 13:00Z, ends 22:00Z
        ("Australia/Sydney", "2024-07-15T13:00:00+00:00", "2024-07-15T22:00:00+00:00"),
    ],
)
def test_users_east_and_west_of_utc(tz: str, at: str, until: str | None) -> None:
    expected = ms(until) if until else None
    assert quiet_until(ms(at), tz, NIGHT) == expected


# --- quiet hours: DST transitions --------------------------------------------------------


def test_night_spanning_spring_forward_is_an_hour_shorter_new_york() -> None:
    # 2024-03-10 02:00 EST -> 03:00 EDT. 21:00 EST (02:00Z) .. 08:00 EDT (12:00Z) = 10h.
    assert quiet_until(ms("2024-03-10T02:00:00+00:00"), "America/New_York", NIGHT) == ms(
        "2024-03-10T12:00:00+00:00"
    )
    assert quiet_until(ms("2024-03-10T01:59:59+00:00"), "America/New_York", NIGHT) is None


def test_window_end_inside_spring_forward_gap_ends_at_the_jump() -> None:
    # 02:30 does not exist on 2024-03-10 in New York; the window ends when clocks jump
    # to 03:00 EDT (07:00Z), the first instant the wall clock reads 02:30 or later.
    window = qh("00:30", "02:30")
    assert quiet_until(ms("2024-03-10T06:00:00+00:00"), "America/New_York", window) == ms(
        "2024-03-10T07:00:00+00:00"
    )
    assert quiet_until(ms("2024-03-10T07:00:00+00:00"), "America/New_York", window) is None


def test_window_start_inside_gap_starts_at_the_jump_and_window_inside_gap_is_empty() -> None:
    starts_in_gap = qh("02:30", "06:00")
    assert quiet_until(ms("2024-03-10T07:00:00+00:00"), "America/New_York", starts_in_gap) == ms(
        "2024-03-10T10:00:00+00:00"
    )
    assert quiet_until(ms("2024-03-10T06:59:59+00:00"), "America/New_York", starts_in_gap) is None
    inside_gap = qh("02:10", "02:40")
    for at in ("2024-03-10T06:59:00+00:00", "2024-03-10T07:00:00+00:00"):
        assert quiet_until(ms(at), "America/New_York", inside_gap) is None
    # the next day it is an ordinary window again (02:20 EDT = 06:20Z)
    assert quiet_until(ms("2024-03-11T06:20:00+00:00"), "America/New_York", inside_gap) == ms(
        "2024-03-11T06:40:00+00:00"
    )


def test_window_end_in_repeated_fall_back_hour_ends_at_first_occurrence() -> None:
    # 2024-11-03 New York: 01:00-02:00 happens twice (EDT, then EST).
    window = qh("21:00", "01:30")
    first_0130 = ms("2024-11-03T01:30:00-04:00")
    assert quiet_until(ms("2024-11-03T00:00:00-04:00"), "America/New_York", window) == first_0130
    # the second 01:10 (EST) is after the night's window ended: not quiet again
    assert quiet_until(ms("2024-11-03T01:10:00-05:00"), "America/New_York", window) is None
    assert quiet_until(first_0130, "America/New_York", window) is None


def test_night_spanning_fall_back_is_an_hour_longer_los_angeles() -> None:
    # 2024-11-03 02:00 PDT -> 01:00 PST; 21:00 PDT (04:00Z) .. 08:00 PST (16:00Z) = 12h.
    assert quiet_until(ms("2024-11-03T04:00:00+00:00"), "America/Los_Angeles", NIGHT) == ms(
        "2024-11-03T16:00:00+00:00"
    )


@pytest.mark.parametrize(
    "window,at,until",
    [
        # spring forward 2024-03-31 02:00 CET -> 03:00 CEST (01:00Z); 02:30 does not exist
        (("22:00", "02:30"), "2024-03-31T00:45:00+00:00", "2024-03-31T01:00:00+00:00"),
        # whole night across it: 22:00 CET (21:00Z) .. 08:00 CEST (06:00Z)
        (("22:00", "08:00"), "2024-03-30T21:00:00+00:00", "2024-03-31T06:00:00+00:00"),
        # fall back 2024-10-27 03:00 CEST -> 02:00 CET; 02:30 happens twice: first one wins
        (("22:00", "02:30"), "2024-10-26T23:00:00+00:00", "2024-10-27T00:30:00+00:00"),
        # second 02:45 (CET, 01:45Z) is no longer quiet
        (("22:00", "02:30"), "2024-10-27T01:45:00+00:00", None),
        # whole night across it: 22:00 CEST (20:00Z) .. 08:00 CET (07:00Z) = 11h
        (("22:00", "08:00"), "2024-10-26T20:00:00+00:00", "2024-10-27T07:00:00+00:00"),
    ],
)
def test_berlin_dst_transitions(window: tuple[str, str], at: str, until: str | None) -> None:
    expected = ms(until) if until else None
    assert quiet_until(ms(at), "Europe/Berlin", qh(*window)) == expected


def test_sydney_southern_hemisphere_transitions() -> None:
    # DST ends 2024-04-07 03:00 AEDT -> 02:00 AEST: 21:00 AEDT (10:00Z) .. 08:00 AEST (22:00Z)
    assert quiet_until(ms("2024-04-06T10:00:00+00:00"), "Australia/Sydney", NIGHT) == ms(
        "2024-04-06T22:00:00+00:00"
    )
    # DST starts 2024-10-06 02:00 AEST -> 03:00 AEDT (16:00Z on the 5th); 02:30 is skipped
    window = qh("01:00", "02:30")
    assert quiet_until(ms("2024-10-05T15:30:00+00:00"), "Australia/Sydney", window) == ms(
        "2024-10-05T16:00:00+00:00"
    )


# --- time zone fallback and validation ---------------------------------------------------


@pytest.mark.parametrize("tz", [None, "", "Not/AZone", "../../etc/passwd", "/etc/localtime"])
def test_missing_or_invalid_zone_uses_the_fallback(tz: str | None) -> None:
    tokyo_night = qh("21:00", "08:00", fallback="Asia/Tokyo")
    # 12:30Z is 21:30 in Tokyo (quiet) but midday in UTC
    assert quiet_until(ms("2024-06-01T12:30:00+00:00"), tz, tokyo_night) == ms(
        "2024-06-01T23:00:00+00:00"
    )
    assert zone_for(tz, "Asia/Tokyo").key == "Asia/Tokyo"


def test_invalid_quiet_hours_are_rejected() -> None:
    with pytest.raises(ValueError):
        qh("21:00", "08:00", action="later")
    with pytest.raises(ValueError):
        qh("21:00", "08:00", fallback="Mars/Olympus")


@settings(max_examples=300, deadline=None)
@given(
    at=st.integers(ms("2023-01-01T00:00:00+00:00"), ms("2026-01-01T00:00:00+00:00")),
    tz=st.sampled_from(
        [
            "America/New_York",
            "America/Los_Angeles",
            "Europe/Berlin",
            "Australia/Sydney",
            "Asia/Tokyo",
            "Australia/Lord_Howe",
            "UTC",
        ]
    ),
    start=st.times().map(lambda t: t.replace(second=0, microsecond=0)),
    end=st.times().map(lambda t: t.replace(second=0, microsecond=0)),
)
def test_quiet_until_is_the_end_of_a_contiguous_window(
    at: int, tz: str, start: dt.time, end: dt.time
) -> None:
    window = QuietHours(start, end, "defer")
    until = quiet_until(at, tz, window)
    if until is None:
        return
    assert at < until <= at + 26 * HOUR
    assert quiet_until(until - 1, tz, window) == until  # still inside just before the end
    assert quiet_until(until, tz, window) is None  # released at the end


# -- the per-hour memo of quiet_until gives what zoneinfo gives (issue 18's speed-up) -------

_ZONES = [
    "UTC",
    "Europe/Berlin",
    "America/New_York",
    "Asia/Kolkata",  # +05:30: local midnight falls inside a UTC hour
    "Asia/Kathmandu",  # +05:45
    "Australia/Lord_Howe",  # a 30-minute DST shift
    "Pacific/Chatham",
    None,
]


@settings(max_examples=300, deadline=None)
@given(
    at=st.integers(1_704_067_200_000, 1_735_689_600_000),  # 2024
    zone=st.sampled_from(_ZONES),
    start=st.integers(0, 23 * 60 + 59),
    end=st.integers(0, 23 * 60 + 59),
)
def test_the_hourly_memo_agrees_with_zoneinfo(
    at: int, zone: str | None, start: int, end: int
) -> None:
    qh = QuietHours(dt.time(start // 60, start % 60), dt.time(end // 60, end % 60), "defer")
    expected = _quiet_until_exact(at, zone, qh) if start != end else None
    assert quiet_until(at, zone, qh) == expected
