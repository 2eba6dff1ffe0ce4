"""Attribution for every rule (issue 19.4): last send wins, revenue, counted per rule,
step and variant; the same counts in the funnel, the backtest report and the aggregates."""

from __future__ import annotations

import pytest

from nudgeflow.analytics.aggregates import Aggregates
from nudgeflow.backtest.report import Tally
from nudgeflow.engine.actions import Conversion
from nudgeflow.engine.attribution import Attribution, engage, revenue_of
from tests.unit.engine.helpers import T0, D, H, M, Run, ev, iso, make_engine

RULES = """
rules:
  - name: nudge
    trigger: cart_add
    delay: 10m
  - name: later
    trigger: cart_add
    delay: 1h
  - name: split
    trigger: signup
    delay: 0s
    experiment:
      variants: {a: {weight: 1}, b: {weight: 1}}
      conversion: {event: order_completed, within: 1d}
  - name: custom
    trigger: login
    delay: 0s
    conversion: {event: booked, within: 2h}
"""


@pytest.mark.parametrize(
    ("props", "revenue"),
    [
        ({"revenue": 120, "total": 5}, 120.0),
        ({"total": "99.5", "value": 1}, 99.5),
        ({"revenue": "n/a", "value": 7}, 7.0),  # not numeric: the next one
        ({"revenue": True, "total": 3}, 3.0),  # a boolean is not a number
        ({"revenue": None, "value": float("nan")}, None),
        ({}, None),
    ],
)
def test_revenue_is_the_first_numeric_of_revenue_total_value(
    props: dict[str, object], revenue: float | None
) -> None:
    assert revenue_of(props) == revenue


def test_every_rule_converts_on_purchase_within_3_days_by_default() -> None:
    engine = make_engine(RULES)
    assert (engine.rules["nudge"].conversion_event, engine.rules["nudge"].conversion_within_ms) == (
        "purchase",
        3 * D,
    )
    assert engine.rules["split"].conversion_event == "order_completed"  # the experiment's
    assert engine.rules["custom"].conversion_within_ms == 2 * H


def test_last_send_wins_once_per_send_with_revenue() -> None:
    run = Run(make_engine(RULES)).send(ev("cart_add", T0, "c1"))
    run.tick(T0 + 2 * H)  # nudge at +10m, later at +1h
    run.send(ev("purchase", T0 + 3 * H, "p1", revenue=120), ev("purchase", T0 + 4 * H, total=5))
    [nudge, later] = run.conversions()  # one per rule: each rule's latest send, once
    assert (nudge.rule, nudge.revenue, nudge.step, nudge.variant) == ("nudge", 120.0, 0, "default")
    assert (later.rule, later.revenue) == ("later", 120.0)
    assert (nudge.exposed_at, later.exposed_at) == (iso(T0 + 10 * M), iso(T0 + H))


def test_a_conversion_after_the_window_is_not_attributed() -> None:
    run = Run(make_engine(RULES)).send(ev("login", T0), ev("booked", T0 + 3 * H, value=50))
    assert run.triggers("custom") and run.conversions() == []
    run = Run(make_engine(RULES)).send(ev("login", T0), ev("booked", T0 + H, value=50))
    assert [(c.rule, c.revenue) for c in run.conversions()] == [("custom", 50.0)]


def test_the_latest_of_two_sends_of_a_rule_wins() -> None:
    run = Run(make_engine(RULES)).send(ev("login", T0, "l1"), ev("login", T0 + M, "l2"))
    run.send(ev("booked", T0 + 2 * M, revenue=10))
    [c] = run.conversions()
    assert c.exposed_at == iso(T0 + M)


def test_opens_and_clicks_are_once_per_send_and_kind() -> None:
    run = Run(make_engine(RULES)).send(ev("login", T0))
    [t] = run.triggers()
    state = run.state
    assert state is not None
    first = engage(state, t.trigger_id, "clicked", "message_clicked", T0 + M)
    assert first is not None and (first.kind, first.rule, first.step) == ("clicked", "custom", 0)
    assert engage(state, t.trigger_id, "clicked", "message_clicked", T0 + 2 * M) is None
    assert engage(state, "forged", "opened", "message_opened", T0 + 2 * M) is None


def _conversion(variant: str, revenue: float | None, kind: str = "conversion", n: int = 0):
    return Conversion(
        user_id=f"u{n}",
        rule="split",
        variant=variant,
        trigger_id=f"t{n}",
        kind=kind,  # type: ignore[arg-type]
        event_type="order_completed",
        at="x",
        exposed_at="x",
        step=0,
        revenue=revenue,
    )


def test_revenue_is_summed_per_variant_and_step() -> None:
    counts = Attribution()
    for n, (variant, revenue) in enumerate([("a", 120.0), ("a", 30.0), ("b", None), ("b", 9.5)]):
        counts.add(_conversion(variant, revenue, n=n))
    counts.add(_conversion("a", None, "clicked", n=9))
    by_variant = counts.by_variant("split")
    assert (by_variant["a"].converted, by_variant["a"].revenue, by_variant["a"].clicked) == (
        2,
        150.0,
        1,
    )
    assert (by_variant["b"].converted, by_variant["b"].revenue) == (2, 9.5)
    assert counts.by_step("split")[0].revenue == 159.5
    view = counts.view("split", "order_completed", D)
    assert (view["converted"], view["revenue"], view["within_s"]) == (4, 159.5, 86400.0)


def test_the_report_and_the_aggregates_count_the_same() -> None:
    engine = make_engine(RULES)
    records = [_conversion(v, r, n=n) for n, (v, r) in enumerate([("a", 10.0), ("b", 2.5)])]
    tally = Tally()
    tally.add(records)
    aggregates = Aggregates(list(engine.rules.values()))
    for record in [*records, records[0]]:  # a record read twice counts once
        aggregates.on_conversion(record)
    experiment = aggregates.experiment("split")
    assert experiment is not None
    live = {v["variant"]: (v["converted"], v["revenue"]) for v in experiment["variants"]}
    assert live == {"a": (1, 10.0), "b": (1, 2.5)}
    assert tally.rule("split")["revenue"] == 12.5
    funnel = aggregates.rule_funnel("split")
    assert funnel is not None
    assert funnel["attribution"]["variants"]["a"]["revenue"] == 10.0
    assert funnel["steps"][0]["revenue"] == 12.5
