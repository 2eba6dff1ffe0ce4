"""Best-time sends: the decayed hour-of-week histogram and when a send goes (DESIGN §3.1)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from nudgeflow.engine import besttime
from nudgeflow.engine.besttime import HALF_LIFE_MS, HOURS, best_hours, hour_of_week, record
from nudgeflow.engine.state import new_state
from tests.unit.engine.helpers import D, H, M, Run, ev, iso, make_engine

MONDAY = 1_717_372_800_000  # 2024-06-03T00:00:00Z, a Monday
BERLIN = "Europe/Berlin"  # UTC+2 in June


def test_hour_of_week_is_local() -> None:
    assert hour_of_week(MONDAY, "UTC") == 0
    assert hour_of_week(MONDAY, BERLIN) == 2  # Monday 02:00 in Berlin
    assert hour_of_week(MONDAY - H, "UTC") == HOURS - 1  # Sunday 23:00
    assert besttime.label(43) == "Tue 19:00"


def test_newer_activity_outweighs_older_by_the_half_life() -> None:
    bt = None
    for week in range(3):  # three old Mondays at 09:00 ...
        bt = record(bt, MONDAY + 9 * H + week * 7 * D, "UTC")
    late = MONDAY + 9 * H + 2 * 7 * D + 10 * HALF_LIFE_MS
    bt = record(bt, late - 7 * D + 15 * H - 9 * H, "UTC")  # ... one recent Sunday-ish hour
    [(best, _)] = best_hours(bt, 1)
    assert best == hour_of_week(late - 7 * D + 6 * H, "UTC")


@given(st.lists(st.integers(0, 400 * 24), min_size=1, max_size=300))
def test_the_histogram_stays_fixed_size_and_never_overflows(hours: list[int]) -> None:
    bt = None
    for h in sorted(hours):
        bt = record(bt, MONDAY + h * H, "UTC")
    assert bt is not None and len(bt.counts) == 2 * HOURS
    assert best_hours(bt, 1)  # the newest event always weighs something


FLOW = """
templates: {x: X}
rules:
  - name: j
    trigger: cart_add
    steps:
      - send: {template: x, send_at: {best_hour: true, within: WITHIN}}
"""


def _active_at_19_berlin(run: Run, days: int = 3) -> None:
    for i in range(days):  # 17:00Z = 19:00 Berlin, on Monday .. Wednesday
        run.send(ev("login", MONDAY + i * D + 17 * H + 5 * M, f"l{i}", traits={"timezone": BERLIN}))


def test_a_send_waits_for_the_best_hour_within_the_window() -> None:
    run = Run(make_engine(FLOW.replace("WITHIN", "24h")))
    _active_at_19_berlin(run, days=2)  # Mon and Tue at 19:00: the newer, Tue, weighs more
    assert run.state is not None
    assert best_hours(run.state.activity, 1)[0][0] == 24 + 19
    next_tuesday_noon = MONDAY + 8 * D + 10 * H  # 12:00 Berlin
    run.send(ev("cart_add", next_tuesday_noon, "a"))
    [deferred] = run.decisions("deferred")
    assert (deferred.reason, deferred.detail["best_hour"]) == ("best_time", "Tue 19:00")
    best = MONDAY + 8 * D + 17 * H
    assert deferred.deadline == iso(best) and run.triggers() == []
    run.tick(best - 1)
    assert run.triggers() == []
    run.tick(best)
    [trigger] = run.triggers()
    assert trigger.deadline == iso(best)
    [fired] = run.decisions("fired")
    assert fired.detail["timing"] == "best_hour"


def test_no_activity_in_the_window_or_no_history_sends_at_once() -> None:
    run = Run(make_engine(FLOW.replace("WITHIN", "2h")))
    _active_at_19_berlin(run)  # Mon .. Wed evenings; nothing at midday
    noon = MONDAY + 3 * D + 10 * H
    run.send(ev("cart_add", noon, "a"))
    [trigger] = run.triggers()
    assert trigger.deadline == iso(noon)
    [fired] = run.decisions("fired")
    assert (fired.detail["timing"], fired.detail["best_hour"]) == ("no_activity_in_window", None)
    fresh = Run(make_engine(FLOW.replace("WITHIN", "24h"))).send(ev("cart_add", noon, "a"))
    assert [d.detail["timing"] for d in fresh.decisions("fired")] == ["no_history"]


def test_the_best_hour_within_the_window_wins_over_a_better_one_beyond_it() -> None:
    bt = None
    for week in range(4):  # Saturdays at 10:00 UTC, four of them: the best of the week
        bt = record(bt, MONDAY + 5 * D + 10 * H + week * 7 * D, "UTC")
    bt = record(bt, MONDAY + 4 * 7 * D + 20 * H, "UTC")  # once, a Monday 20:00
    monday_noon = MONDAY + 4 * 7 * D + 7 * D + 12 * H
    chosen = besttime.timing(bt, monday_noon, D, "UTC")
    assert (chosen.why, besttime.label(chosen.best or 0)) == ("best_hour", "Mon 20:00")
    assert chosen.send_ms == monday_noon + 8 * H
    inside = besttime.timing(bt, monday_noon + 8 * H + 30 * M, D, "UTC")
    assert inside.why == "best_hour_now"  # within that hour: at once


def test_describe_names_the_best_hours_in_the_users_zone() -> None:
    state = new_state("u")
    for i in range(3):
        state.activity = record(state.activity, MONDAY + i * D + 17 * H, BERLIN)
    view = besttime.describe(state.activity, BERLIN)
    assert view["timezone"] == BERLIN
    assert [h["hour"] for h in view["best_hours"]] == ["Wed 19:00", "Tue 19:00", "Mon 19:00"]


def test_no_histogram_is_kept_when_no_rule_sends_at_the_best_hour() -> None:
    run = Run(make_engine("rules: [{name: r, trigger: cart_add, delay: 1h}]"))
    _active_at_19_berlin(run)
    assert run.state is not None and run.state.activity is None


def test_a_window_across_a_dst_change_reads_each_hour_in_local_time() -> None:
    sunday_19_cest = 1_711_904_400_000  # 2024-03-31T17:00Z = 19:00 CEST (summer time began)
    bt = record(None, sunday_19_cest - 7 * D + H, BERLIN)  # 2024-03-24T18:00Z = 19:00 CET
    saturday_noon = sunday_19_cest - 29 * H  # 2024-03-30T12:00Z
    chosen = besttime.timing(bt, saturday_noon, 2 * D, BERLIN)
    assert (chosen.why, chosen.send_ms) == ("best_hour", sunday_19_cest)


def _timing_per_hour(bt: besttime.BestTime, at: int, within: int, tz: str) -> tuple[int, str]:
    """The definition, hour by hour: each hour's bucket read at its own instant."""
    offset = besttime.utc_offset_ms(tz, at)
    hour_start = at - (at + offset) % H
    best, best_at, weight = None, at, 0
    counts = besttime._load(bt.counts)
    for k in range(HOURS):
        start = at if k == 0 else hour_start + k * H
        if start - at > within:
            break
        bucket = hour_of_week(start, tz)
        if counts[bucket] > weight:
            best, best_at, weight = bucket, start, counts[bucket]
    return best_at, "none" if best is None else besttime.label(best)


@given(
    activity=st.lists(st.integers(0, 60 * 24), min_size=1, max_size=40),
    at=st.integers(60 * 24, 90 * 24),
    within_h=st.integers(0, 200),
    tz=st.sampled_from(["UTC", BERLIN, "America/New_York", "Asia/Kolkata", "Australia/Lord_Howe"]),
)
def test_timing_steps_through_the_window_as_the_definition_does(
    activity: list[int], at: int, within_h: int, tz: str
) -> None:
    base = 1_709_251_200_000  # 2024-03-01: the window may cross the March DST changes
    bt = None
    for h in sorted(activity):
        bt = record(bt, base + h * H + 7 * M, tz)
    assert bt is not None
    at_ms = base + at * H + 13 * M
    chosen = besttime.timing(bt, at_ms, within_h * H, tz)
    expected = _timing_per_hour(bt, at_ms, within_h * H, tz)
    assert (
        chosen.send_ms,
        besttime.label(chosen.best) if chosen.best is not None else "none",
    ) == expected
