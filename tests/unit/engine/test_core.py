"""Semantics of the pure core (DESIGN §3, issues 3 and 5), table-driven where it helps."""

from __future__ import annotations

import pytest

from nudgeflow.engine.state import decode_state, encode_state
from tests.unit.engine.helpers import T0, D, H, M, Run, S, ev, iso, make_engine, names

CART = """
templates: {cart.j2: "Hi {{ user.name | default('there') }}, {{ cart.value | money }}"}
rules:
  - name: abandoned_cart
    trigger: cart_add
    inactivity: 30m
    activity: [product_view, cart_add, cart_remove, checkout_started]
    cancel_on: [purchase, logout]
    when: cart.value > 50
    cooldown: 24h
    template: cart.j2
"""


def add(ts: int, eid: str | None = None, price: float = 60, **kw: object):
    return ev("cart_add", ts, eid, product_id="p1", product_name="Shoes", price=price, **kw)


def test_event_exactly_at_the_deadline_fires_before_it_is_applied() -> None:
    run = Run(make_engine(CART)).send(add(T0, "a1"), ev("product_view", T0 + 30 * M, "v1"))
    [trigger] = run.triggers()
    assert trigger.deadline == iso(T0 + 30 * M)
    assert trigger.message == "Hi there, $60.00"
    assert run.decisions("rearmed") == []  # the view came after the firing
    assert run.state is not None and run.state.armed == {}


def test_event_one_ms_before_the_deadline_pushes_it() -> None:
    run = Run(make_engine(CART)).send(add(T0, "a1"), ev("product_view", T0 + 30 * M - 1))
    assert run.triggers() == []
    assert run.state is not None
    assert run.state.next_deadline() == T0 + 60 * M - 1
    run.tick(T0 + 60 * M - 2)
    assert run.triggers() == []
    run.tick(T0 + 60 * M - 1)
    assert [t.deadline for t in run.triggers()] == [iso(T0 + 60 * M - 1)]


def test_out_of_order_activity_does_not_pull_the_deadline_back() -> None:
    run = Run(make_engine(CART)).send(add(T0 + 10 * M, "a1"), ev("product_view", T0 + 5 * M))
    assert run.state is not None and run.state.next_deadline() == T0 + 40 * M
    run.tick(T0 + 40 * M)
    assert [t.deadline for t in run.triggers()] == [iso(T0 + 40 * M)]


def test_cancel_then_rearm_fires_for_the_second_arming() -> None:
    run = Run(make_engine(CART)).send(
        add(T0, "a1"), ev("purchase", T0 + 5 * M, "p1"), add(T0 + 10 * M, "a2")
    )
    [cancelled] = run.decisions("cancelled")
    assert cancelled.reason == "purchase"
    run.tick(T0 + 39 * M)
    assert run.triggers() == []
    run.tick(T0 + 40 * M)
    [trigger] = run.triggers()
    assert trigger.armed_at == iso(T0 + 10 * M)
    first = Run(make_engine(CART)).send(add(T0, "a1")).tick(T0 + D).triggers()[0]
    assert trigger.trigger_id != first.trigger_id  # a different arming, a different id


@pytest.mark.parametrize(
    ("second_cart_at", "fires"),
    [(T0 + 2 * H, 1), (T0 + 30 * M + 24 * H - 30 * M + 1, 2)],
    ids=["within-24h-suppressed", "after-24h-fires-again"],
)
def test_cooldown(second_cart_at: int, fires: int) -> None:
    run = Run(make_engine(CART)).send(add(T0, "a1")).tick(T0 + 30 * M)
    run.send(add(second_cart_at, "a2")).tick(second_cart_at + 30 * M)
    assert len(run.triggers()) == fires
    if fires == 1:
        [suppressed] = run.decisions("suppressed")
        assert suppressed.reason == "cooldown"


def test_two_rules_on_one_event() -> None:
    engine = make_engine(
        CART
        + """
  - name: instant_thanks
    trigger: cart_add
"""
    )
    run = Run(engine).send(add(T0, "a1"))
    assert names(run.triggers()) == [("instant_thanks", 0)]
    assert [d.rule for d in run.decisions("armed")] == ["abandoned_cart"]
    run.tick(T0 + 30 * M)
    assert names(run.triggers()) == [("instant_thanks", 0), ("abandoned_cart", 0)]


def test_when_false_at_fire_time() -> None:
    run = Run(make_engine(CART)).send(add(T0, "a1"), ev("cart_remove", T0 + M, product_id="p1"))
    run.tick(T0 + 31 * M)
    assert run.triggers() == []
    [decision] = run.decisions("condition_false")
    assert decision.deadline == iso(T0 + 31 * M)
    assert run.state is not None and run.state.armed == {}  # evaluated once, then disarmed


def test_repeated_event_id_is_ignored() -> None:
    engine = make_engine(CART)
    run = Run(engine).send(add(T0, "a1"))
    assert run.state is not None
    before = encode_state(run.state)
    step = engine.apply(run.state, add(T0 + M, "a1"), T0 + M)
    assert step.duplicate and step.actions == []
    assert encode_state(step.state) == before
    assert run.state.cart["p1"].qty == 1


SERIES = """
templates: {w1: "one", w2: "two", w3: "three"}
rules:
  - name: welcome_series
    trigger: signup
    steps: [{delay: 0s, template: w1}, {delay: 1d, template: w2}, {delay: 3d, template: w3}]
    cancel_on: [unsubscribe]
"""


def test_series_steps_cancelled_midway() -> None:
    run = Run(make_engine(SERIES)).send(ev("signup", T0, "s1"))
    assert [t.message for t in run.triggers()] == ["one"]
    run.tick(T0 + D)
    assert [t.message for t in run.triggers()] == ["one", "two"]
    run.send(ev("unsubscribe", T0 + 2 * D, "x"))
    run.tick(T0 + 10 * D)
    assert [(t.step, t.message) for t in run.triggers()] == [(0, "one"), (1, "two")]
    [cancelled] = run.decisions("cancelled")
    assert cancelled.detail["step"] == 2
    assert len({t.trigger_id for t in run.triggers()}) == 2


@pytest.mark.parametrize(
    ("timing", "expected_deadline"),
    [("delay: 30m", T0 + 30 * M), ("inactivity: 30m", T0 + 20 * M + 30 * M)],
)
def test_delay_is_not_moved_by_activity_but_inactivity_is(
    timing: str, expected_deadline: int
) -> None:
    engine = make_engine(f"rules: [{{name: r, trigger: cart_add, {timing}}}]")
    run = Run(engine).send(add(T0, "a"), ev("product_view", T0 + 20 * M, "v"))
    run.tick(T0 + 2 * H)
    assert [t.deadline for t in run.triggers()] == [iso(expected_deadline)]


@pytest.mark.parametrize(
    ("activity", "event_type", "pushed"),
    [
        ("[product_view]", "product_view", True),
        ("[product_view]", "login", False),
        ("null", "login", True),  # default: any event is activity
    ],
)
def test_activity_list_filters(activity: str, event_type: str, pushed: bool) -> None:
    engine = make_engine(
        f"rules: [{{name: r, trigger: cart_add, inactivity: 30m, activity: {activity}}}]"
    )
    run = Run(engine).send(add(T0, "a"), ev(event_type, T0 + 10 * M, "x"))
    assert run.state is not None
    assert run.state.next_deadline() == (T0 + 40 * M if pushed else T0 + 30 * M)


def test_producer_cart_value_overrides_computed_value() -> None:
    run = Run(make_engine(CART)).send(add(T0, "a1", price=10, cart_value=80.5))
    run.tick(T0 + 30 * M)
    [trigger] = run.triggers()
    assert trigger.fields["cart_value"] == 80.5
    # a cart change without cart_value makes the computed value current again
    run2 = Run(make_engine(CART)).send(add(T0, "a1", price=10, cart_value=80.5))
    run2.send(ev("cart_add", T0 + M, "a2", product_id="p2", price=5)).tick(T0 + H)
    assert run2.triggers() == [] and len(run2.decisions("condition_false")) == 1


@pytest.mark.parametrize(
    ("when", "offsets", "fires"),
    [
        ("count('product_view', '1h') >= 3", [0, 10 * M, 20 * M], True),
        ("count('product_view', '1h') >= 3", [0, 61 * M, 70 * M], False),  # first left window
        ("count('product_view', '1h') >= 3 and count('purchase', '1h') == 0", [0, M, 2 * M], True),
        ("sum('product_view', 'price', '1h') > 25", [0, M, 2 * M], True),
        ("sum('product_view', 'price', '1h') > 35", [0, M, 2 * M], False),
    ],
)
def test_count_and_sum_windows(when: str, offsets: list[int], fires: bool) -> None:
    engine = make_engine(f'rules: [{{name: browse, trigger: product_view, when: "{when}"}}]')
    run = Run(engine).send(
        *(ev("product_view", T0 + o, f"v{i}", price=10) for i, o in enumerate(offsets))
    )
    assert len(run.triggers()) == (1 if fires else 0)


def test_purchase_in_window_blocks_browse_abandonment() -> None:
    when = "count('product_view', '1h') >= 3 and count('purchase', '1h') == 0"
    engine = make_engine(f'rules: [{{name: browse, trigger: product_view, when: "{when}"}}]')
    run = Run(engine).send(
        ev("purchase", T0, "p"), *(ev("product_view", T0 + i * M, f"v{i}") for i in range(1, 4))
    )
    assert run.triggers() == []


CAPPED = """
limits: {max_per_user: {count: 1, per: 24h}}
rules:
  - {name: low, trigger: cart_add, delay: 10m, priority: 1}
  - {name: high, trigger: cart_add, delay: 10m, priority: 9}
  - {name: later, trigger: login, delay: 10m}
"""


def test_cap_with_priority_at_the_same_logical_time() -> None:
    run = Run(make_engine(CAPPED)).send(add(T0, "a")).tick(T0 + 10 * M)
    assert names(run.triggers()) == [("high", 0)]
    [capped] = run.decisions("suppressed")
    assert (capped.rule, capped.reason) == ("low", "cap")


@pytest.mark.parametrize(("login_at", "fires"), [(T0 + D - 1, False), (T0 + D, True)])
def test_cap_is_a_rolling_window(login_at: int, fires: bool) -> None:
    # `high` fires at T0+10m; a fire exactly 24h later is outside (at-24h, at]
    run = Run(make_engine(CAPPED)).send(add(T0, "a")).tick(T0 + 10 * M)
    run.send(ev("login", login_at, "l")).tick(login_at + 10 * M)
    assert (("later", 0) in names(run.triggers())) is fires


QUIET = """
limits: {quiet_hours: {start: "21:00", end: "08:00", action: ACTION}}
rules: [{name: r, trigger: cart_add, delay: 30m}]
"""


def test_quiet_hours_defer_fires_when_the_window_opens() -> None:
    ny = {"timezone": "America/New_York"}
    # 2024-05-01T02:00Z is 22:00 EDT; +30m is inside 21:00-08:00 local
    start = T0 - 10 * H
    run = Run(make_engine(QUIET.replace("ACTION", "defer")))
    run.send(add(start, "a", traits=ny)).tick(start + 30 * M)
    assert run.triggers() == []
    [deferred] = run.decisions("deferred")
    opens = T0  # 08:00 EDT = 12:00Z
    assert deferred.deadline == iso(opens)
    run.tick(opens - 1)
    assert run.triggers() == []
    run.tick(opens)
    [trigger] = run.triggers()
    assert trigger.deadline == iso(opens)


def test_quiet_hours_drop_suppresses() -> None:
    start = T0 - 10 * H
    run = Run(make_engine(QUIET.replace("ACTION", "drop")))
    run.send(add(start, "a", traits={"timezone": "America/New_York"})).tick(T0 + D)
    assert run.triggers() == []
    assert [d.reason for d in run.decisions("suppressed")] == ["quiet_hours"]


EXPERIMENT = """
templates: {a: "A", b: "B"}
rules:
  - name: r
    trigger: cart_add
    delay: 30m
    template: a
    experiment:
      variants: VARIANTS
      conversion: {event: purchase, within: 1d}
"""


def test_control_variant_records_exposure_without_sending() -> None:
    engine = make_engine(EXPERIMENT.replace("VARIANTS", "{control: {weight: 1, send: false}}"))
    run = Run(engine).send(add(T0, "a")).tick(T0 + 30 * M)
    [trigger] = run.triggers()
    assert (trigger.variant, trigger.send) == ("control", False)
    [fired] = run.decisions("fired")
    assert fired.reason == "control"
    run.send(ev("purchase", T0 + 2 * H, "p"))
    assert [(c.kind, c.variant) for c in run.conversions()] == [("conversion", "control")]


def test_variant_overrides_delay_and_template() -> None:
    engine = make_engine(
        EXPERIMENT.replace("VARIANTS", "{fast: {weight: 1, delay: 5m, template: b}}")
    )
    run = Run(engine).send(add(T0, "a")).tick(T0 + 5 * M)
    [trigger] = run.triggers()
    assert (trigger.variant, trigger.message, trigger.deadline) == ("fast", "B", iso(T0 + 5 * M))


@pytest.mark.parametrize(
    ("purchases", "converted"),
    [([2 * H], 1), ([2 * H, 3 * H], 1), ([30 * M + D + 1], 0), ([10 * M], 0)],
    ids=["in-window", "only-once", "after-window", "before-exposure"],
)
def test_conversion_attribution(purchases: list[int], converted: int) -> None:
    engine = make_engine(EXPERIMENT.replace("VARIANTS", "{std: {weight: 1}}"))
    run = Run(engine).send(add(T0, "a"))
    if purchases[0] < 30 * M:
        run.send(ev("purchase", T0 + purchases[0], "p0"))
        run.tick(T0 + D)
        assert len(run.triggers()) == 1 and run.conversions() == []  # purchase came first
        return
    run.tick(T0 + 30 * M)
    run.send(*(ev("purchase", T0 + p, f"p{i}") for i, p in enumerate(purchases)))
    assert len(run.conversions()) == converted


def test_opens_and_clicks_are_attributed_by_trigger_id() -> None:
    run = Run(make_engine(CART)).send(add(T0, "a")).tick(T0 + 30 * M)
    tid = run.triggers()[0].trigger_id
    run.send(
        ev("message_opened", T0 + H, "o1", trigger_id=tid),
        ev("message_opened", T0 + H + 1, "o2", trigger_id=tid),  # counted once
        ev("message_clicked", T0 + 2 * H, "c1", trigger_id=tid),
        ev("message_clicked", T0 + 2 * H, "c2", trigger_id="trg_unknown"),
    )
    assert [(c.kind, c.trigger_id, c.rule) for c in run.conversions()] == [
        ("opened", tid, "abandoned_cart"),
        ("clicked", tid, "abandoned_cart"),
    ]


def test_trigger_ids_are_deterministic_across_replays_and_state_round_trips() -> None:
    events = [add(T0, "a1"), ev("product_view", T0 + M, "v")]
    first = Run(make_engine(CART)).send(*events).tick(T0 + H).triggers()
    second_run = Run(make_engine(CART)).send(*events)
    assert second_run.state is not None
    second_run.state = decode_state(encode_state(second_run.state))
    second = second_run.tick(T0 + 2 * H).triggers()
    assert [t.trigger_id for t in first] == [t.trigger_id for t in second]
    assert first[0].trigger_id.startswith("trg_") and len(first[0].trigger_id) == 28
    no_id = Run(make_engine(CART)).send(add(T0)).tick(T0 + H).triggers()
    assert no_id[0].trigger_id != first[0].trigger_id


def test_late_timer_is_marked_with_its_lateness() -> None:
    run = Run(make_engine(CART)).send(add(T0, "a"))
    run.tick(T0 + 30 * M + 5 * S)
    [trigger] = run.triggers()
    assert trigger.late and trigger.lateness_s == 5.0
    assert trigger.fired_at == iso(T0 + 30 * M + 5 * S)
    on_time = Run(make_engine(CART)).send(add(T0, "a")).tick(T0 + 30 * M + 500).triggers()[0]
    assert not on_time.late and on_time.lateness_s == 0.5


def test_runtime_template_error_is_a_decision_not_a_crash() -> None:
    engine = make_engine(
        'templates: {t: "Hi {{ user.name }}"}\nrules: [{name: r, trigger: login, template: t}]'
    )
    run = Run(engine).send(ev("login", T0, "l"))  # the user has no name trait
    assert run.triggers() == []
    [suppressed] = run.decisions("suppressed")
    assert suppressed.reason == "template_error"
    assert "t" in str(suppressed.detail["error"])


def test_trigger_fields_are_flat_for_zapier() -> None:
    run = (
        Run(make_engine(CART))
        .send(
            add(
                T0,
                "a",
                currency="EUR",
                traits={"name": "Ana", "email": "ana@x.io", "Segment": "vip", "prefs": {"a": 1}},
            )
        )
        .tick(T0 + H)
    )
    fields = run.triggers()[0].fields
    assert fields == {
        "user_name": "Ana",
        "user_email": "ana@x.io",
        "user_segment": "vip",
        "cart_value": 60.0,
        "cart_item_count": 1,
        "cart_first_item_name": "Shoes",
        "currency": "EUR",
        "event_type": "cart_add",
    }
    payload = run.triggers()[0].to_payload()
    assert all(not isinstance(v, dict | list) for v in payload.values())


def test_default_config_abandoned_cart_end_to_end() -> None:
    from nudgeflow.config.build import build_engine
    from nudgeflow.config.loader import DEFAULT_CONFIG, load_config

    engine = build_engine(load_config(DEFAULT_CONFIG, env={}), secret=b"k")
    traits = {"name": "Ana", "timezone": "UTC"}
    run = Run(engine).send(add(T0, "a", traits=traits)).tick(T0 + 31 * M)
    [trigger] = [t for t in run.triggers() if t.rule == "abandoned_cart"]
    assert trigger.variant in ("fast", "standard", "control")
    assert "Shoes" in trigger.message and "Ana" in trigger.message
