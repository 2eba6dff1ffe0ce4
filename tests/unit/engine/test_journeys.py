"""The journey machine (DESIGN §3.1): every step kind, jumps, exits, and the trigger ids.

Each test builds a flow from YAML (the loader compiles it, as the worker does), feeds
events with now = event time and ticks the clock, and asserts what was sent, when,
with which step and id, and what was not.
"""

from __future__ import annotations

import pytest

from nudgeflow.engine.ids import arming_key, trigger_id
from nudgeflow.engine.state import decode_state, encode_state
from nudgeflow.events.model import Event
from tests.unit.engine.helpers import T0, D, H, M, Run, ev, iso, make_engine

TEMPLATES = 'templates: {t1: "one", t2: "two", t3: "three", tl: "last"}\n'

CART = (
    TEMPLATES
    + """
rules:
  - name: cart
    trigger: cart_add
    exit_on: [purchase]
    steps:
      - wait: {inactivity: 30m, activity: [cart_add, product_view]}
      - send: {template: t1}
      - wait: {until: message_clicked, within: 1d, then: clicked}
      - send: {template: t2, when: cart.value > 100}
      - wait: {delay: 2d}
      - send: {template: t3}
      - exit
      - name: clicked
        wait: {delay: 3d}
      - branch: {if: "count('purchase', '3d') == 0", then: last_call}
      - exit
      - name: last_call
        send: {template: tl}
"""
)


def add(ts: int, eid: str, price: float = 120) -> Event:
    return ev("cart_add", ts, eid, product_id="p1", price=price)


def sent(run: Run) -> list[tuple[object, str, str]]:
    """(step, message, deadline) of every trigger so far."""
    return [(t.step, t.message, t.deadline) for t in run.triggers()]


def test_the_unclicked_path_sends_three_messages_at_their_times() -> None:
    run = Run(make_engine(CART)).send(add(T0, "a"), ev("product_view", T0 + 10 * M, "v"))
    run.tick(T0 + 40 * M - 1)
    assert sent(run) == []  # the view pushed the inactivity wait to 10m + 30m
    run.tick(T0 + 40 * M)
    assert sent(run) == [(1, "one", iso(T0 + 40 * M))]
    run.tick(T0 + 40 * M + D)  # no click within a day: the next step, at the timeout
    run.tick(T0 + 40 * M + 3 * D)
    assert sent(run) == [
        (1, "one", iso(T0 + 40 * M)),
        (3, "two", iso(T0 + 40 * M + D)),
        (5, "three", iso(T0 + 40 * M + 3 * D)),
    ]
    [exited] = run.decisions("exited")
    assert (exited.reason, exited.detail["step"]) == ("exit", 6)
    assert run.state is not None and run.state.armed == {}
    [waited] = run.decisions("waited")
    assert (waited.reason, waited.detail["to"]) == ("timeout", 3)


def test_a_click_on_the_first_message_takes_the_named_branch() -> None:
    run = Run(make_engine(CART)).send(add(T0, "a")).tick(T0 + 30 * M)
    first = run.triggers()[0]
    run.send(ev("message_clicked", T0 + 2 * H, "c", trigger_id=first.trigger_id))
    [waited] = run.decisions("waited")
    assert (waited.reason, waited.detail) == ("message_clicked", {"step": 2, "to": "clicked"})
    run.tick(T0 + 2 * H + 3 * D)
    assert sent(run)[1:] == [("last_call", "last", iso(T0 + 2 * H + 3 * D))]
    [branched] = run.decisions("branched")
    assert (branched.reason, branched.detail["to"]) == ("then", "last_call")
    assert [d.reason for d in run.decisions("exited")] == ["completed"]


def test_a_purchase_in_the_clicked_branch_means_no_last_call() -> None:
    run = Run(make_engine(CART.replace("exit_on: [purchase]", "exit_on: [refund]")))
    run.send(add(T0, "a")).tick(T0 + 30 * M)
    tid = run.triggers()[0].trigger_id
    run.send(ev("message_clicked", T0 + H, "c", trigger_id=tid), ev("purchase", T0 + D, "p"))
    run.tick(T0 + H + 3 * D)
    assert [s[0] for s in sent(run)] == [1]
    [branched] = run.decisions("branched")
    assert branched.reason == "else" and branched.detail["to"] == 9


def test_a_click_on_another_rules_message_or_before_the_wait_does_not_resume() -> None:
    run = Run(make_engine(CART)).send(add(T0, "a"))
    run.send(ev("message_clicked", T0 + M, "early"))  # before the wait began
    run.tick(T0 + 30 * M)
    run.send(ev("message_clicked", T0 + H, "c", trigger_id="trg_someone_else"))
    assert run.decisions("waited") == []
    run.tick(T0 + 30 * M + D)
    assert [s[0] for s in sent(run)] == [1, 3]


def test_a_send_whose_when_is_false_is_skipped_and_the_flow_goes_on() -> None:
    run = Run(make_engine(CART)).send(add(T0, "a", price=60)).tick(T0 + 30 * M + 3 * D)
    assert [s[0] for s in sent(run)] == [1, 5]
    [skipped] = run.decisions("condition_false")
    assert skipped.detail["step"] == 3 and skipped.detail["entered"] is True


@pytest.mark.parametrize(
    ("purchase_at", "steps_sent", "cancelled_at_step"),
    [
        (10 * M, [], 0),  # waiting for inactivity
        (30 * M + H, [1], 2),  # waiting for the click
        (30 * M + D + H, [1, 3], 4),  # waiting the 2 days
    ],
    ids=["at-the-first-wait", "at-the-until", "at-the-delay"],
)
def test_exit_on_ends_the_run_at_any_step(
    purchase_at: int, steps_sent: list[int], cancelled_at_step: int
) -> None:
    run = Run(make_engine(CART)).send(add(T0, "a"))
    run.tick(T0 + purchase_at - 1).send(ev("purchase", T0 + purchase_at, "p"))
    run.tick(T0 + 10 * D)
    assert [s[0] for s in sent(run)] == steps_sent
    [cancelled] = run.decisions("cancelled")
    assert (cancelled.reason, cancelled.detail["step"]) == ("purchase", cancelled_at_step)
    assert run.state is not None and run.state.armed == {}


def test_exit_on_while_a_send_is_deferred_by_quiet_hours() -> None:
    quiet = "limits: {quiet_hours: {start: '21:00', end: '08:00'}}\n"
    run = Run(make_engine(quiet + CART))
    evening = T0 + 9 * H  # 21:00 UTC; the first send falls due at 21:30, deferred to 08:00
    run.send(add(evening, "a")).tick(evening + 31 * M)
    [deferred] = run.decisions("deferred")
    assert (deferred.reason, deferred.detail["step"]) == ("quiet_hours", 1)
    run.send(ev("purchase", evening + H, "p")).tick(evening + 5 * D)
    assert run.triggers() == []
    assert run.decisions("cancelled")[0].detail["step"] == 1


ENTRY = """
rules:
  - name: big_order
    trigger: purchase
    delay: 1h
    entry: event.properties.total > 100
"""


def test_entry_refuses_the_10_dollar_order_and_accepts_the_500_one() -> None:
    run = Run(make_engine(ENTRY))
    run.send(ev("purchase", T0, "o1", total=10), ev("purchase", T0 + 10 * M, "o2", total=500))
    [refused] = run.decisions("not_entered")
    assert (refused.reason, refused.detail["expression"]) == (
        "entry",
        "event.properties.total > 100",
    )
    run.tick(T0 + 2 * H)
    [trigger] = run.triggers()
    assert trigger.deadline == iso(T0 + 10 * M + H)
    assert trigger.armed_at == iso(T0 + 10 * M)


PER_ORDER = """
limits: {max_runs: 2}
rules:
  - name: post_purchase
    trigger: purchase
    delay: 3d
    instance: event.properties.order_id
"""


def test_one_run_per_instance_and_each_send_has_its_own_id() -> None:
    run = Run(make_engine(PER_ORDER))
    run.send(ev("purchase", T0, "e1", order_id="o-1"), ev("purchase", T0 + H, "e2", order_id=7))
    run.send(ev("purchase", T0 + 2 * H, "e3", order_id="o-1"))  # the same order again
    [again] = run.decisions("already_active")
    assert again.detail["instance"] == "o-1"
    run.tick(T0 + 4 * D)
    triggers = run.triggers()
    assert [(t.deadline, t.fields["instance"]) for t in triggers] == [
        (iso(T0 + 3 * D), "o-1"),
        (iso(T0 + H + 3 * D), "7"),
    ]
    assert triggers[0].trigger_id == trigger_id(
        "post_purchase", "u1", arming_key("e1", T0), 0, "o-1"
    )
    assert len({t.trigger_id for t in triggers}) == 2
    assert [d.reason for d in run.decisions("exited")] == ["completed", "completed"]


def test_a_trigger_without_an_instance_value_is_not_entered() -> None:
    run = Run(make_engine(PER_ORDER)).send(ev("purchase", T0, "e1"))
    [refused] = run.decisions("not_entered")
    assert refused.reason == "instance"
    assert run.state is not None and run.state.armed == {}


def test_the_oldest_run_is_evicted_past_max_runs() -> None:
    run = Run(make_engine(PER_ORDER))
    for i in range(3):
        run.send(ev("purchase", T0 + i * H, f"e{i}", order_id=f"o{i}"))
    [evicted] = run.decisions("evicted")
    assert (evicted.reason, evicted.detail["instance"]) == ("max_runs", "o0")
    run.tick(T0 + 5 * D)
    assert [t.fields["instance"] for t in run.triggers()] == ["o1", "o2"]


RESTART = """
templates: {x: X}
rules:
  - name: r
    trigger: signup
    restart: RESTART
    steps:
      - wait: {delay: 1h}
      - send: {template: x}
"""


@pytest.mark.parametrize("restart", [False, True])
def test_a_trigger_for_an_active_run_restarts_it_only_with_restart(restart: bool) -> None:
    engine = make_engine(RESTART.replace("RESTART", str(restart).lower()))
    run = Run(engine).send(ev("signup", T0, "s1"), ev("signup", T0 + 30 * M, "s2"))
    run.tick(T0 + 3 * H)
    [trigger] = run.triggers()
    if restart:
        assert trigger.deadline == iso(T0 + 90 * M)
        assert run.decisions("exited")[0].reason == "restarted"
    else:
        assert trigger.deadline == iso(T0 + H)
        [again] = run.decisions("already_active")
        assert again.reason == "signup"


REENTRY = """
rules:
  - name: r
    trigger: signup
    reentry: REENTRY
    steps:
      - wait: {delay: 1h}
      - send: {template: x}
"""


@pytest.mark.parametrize(
    ("reentry", "second_at", "sends"),
    [
        ("never", 5 * D, 1),
        ("after 2d", H + D, 1),  # one day after the first run ended: too soon
        ("after 2d", H + 2 * D, 2),
        ("always", 10 * M, 2),  # a second run while the first is active
    ],
)
def test_reentry(reentry: str, second_at: int, sends: int) -> None:
    engine = make_engine("templates: {x: X}\n" + REENTRY.replace("REENTRY", reentry))
    run = Run(engine).send(ev("signup", T0, "s1")).tick(T0 + H)
    run.send(ev("signup", T0 + second_at, "s2")).tick(T0 + 10 * D)
    assert len(run.triggers()) == sends
    if sends == 1:
        [refused] = run.decisions("not_entered")
        assert refused.reason == "reentry"


def test_by_default_a_run_may_start_again_once_the_last_one_ended() -> None:
    engine = make_engine("templates: {x: X}\n" + REENTRY.replace("    reentry: REENTRY\n", ""))
    run = Run(engine).send(ev("signup", T0, "s1"), ev("signup", T0 + 30 * M, "s2"))
    run.tick(T0 + H).send(ev("signup", T0 + 2 * H, "s3")).tick(T0 + 4 * H)
    assert [t.armed_at for t in run.triggers()] == [iso(T0), iso(T0 + 2 * H)]


SPLIT = """
templates: {a: A, b: B}
rules:
  - name: s
    trigger: signup
    steps:
      - split: {left: {weight: 50, then: left}, right: {weight: 50, then: right}}
      - name: left
        send: {template: a}
      - exit
      - name: right
        send: {template: b}
"""


def test_split_paths_are_stable_per_user_and_roughly_weighted() -> None:
    engine = make_engine(SPLIT)
    paths = {}
    for i in range(200):
        user = f"user-{i}"
        run = Run(engine).send(ev("signup", T0, "s", user=user))
        again = Run(engine).send(ev("signup", T0 + D, "s2", user=user))
        [split], [split2] = run.decisions("split"), again.decisions("split")
        assert split.reason == split2.reason  # the same hash, the same path
        [trigger] = run.triggers()
        assert trigger.message == ("A" if split.reason == "left" else "B")
        paths[user] = split.reason
    assert 70 < sum(1 for p in paths.values() if p == "left") < 130


LOOP = """
templates: {x: X}
limits: {max_per_user: {count: 100, per: 1h}}
rules:
  - name: weekly
    trigger: signup
    exit_on: [unsubscribe]
    steps:
      - name: again
        wait: {delay: 7d}
      - send: {template: x}
      - branch: {if: "count('purchase', '7d') == 0", then: again}
"""


def test_a_loop_sends_once_per_pass_with_a_new_id_each_time() -> None:
    run = Run(make_engine(LOOP)).send(ev("signup", T0, "s")).tick(T0 + 21 * D)
    triggers = run.triggers()
    assert [t.deadline for t in triggers] == [iso(T0 + k * 7 * D) for k in (1, 2, 3)]
    assert len({t.trigger_id for t in triggers}) == 3
    run.send(ev("purchase", T0 + 22 * D, "p")).tick(T0 + 40 * D)
    assert len(run.triggers()) == 4  # the 4th pass sent, then the branch left the loop


CAPPED = """
templates: {x: X}
limits: {max_per_user: {count: 1, per: 1d}}
rules:
  - name: j
    trigger: signup
    steps:
      - send: {template: x}
      - send: {template: x}
      - wait: {delay: 2d}
      - send: {template: x}
"""


def test_a_suppressed_send_is_a_decision_and_the_run_goes_on() -> None:
    run = Run(make_engine(CAPPED)).send(ev("signup", T0, "s")).tick(T0 + 3 * D)
    assert [t.step for t in run.triggers()] == [0, 3]
    [capped] = run.decisions("suppressed")
    assert (capped.reason, capped.detail["step"]) == ("cap", 1)


def test_old_forms_keep_their_trigger_ids_and_step_numbers() -> None:
    series = """
templates: {w1: one, w2: two}
rules:
  - {name: w, trigger: signup, steps: [{delay: 0s, template: w1}, {delay: 1d, template: w2}]}
"""
    run = Run(make_engine(series)).send(ev("signup", T0, "s1")).tick(T0 + D)
    assert [(t.step, t.trigger_id) for t in run.triggers()] == [
        (k, trigger_id("w", "u1", "id:s1", k)) for k in (0, 1)
    ]
    assert run.decisions("exited") == []  # old forms end quietly, as they always did


def test_the_state_of_a_run_and_the_histogram_round_trip() -> None:
    run = Run(make_engine(PER_ORDER)).send(ev("purchase", T0, "e1", order_id="o-1"))
    assert run.state is not None
    back = decode_state(encode_state(run.state))
    assert back == run.state
    assert back.next_deadline() == T0 + 3 * D


def test_a_run_past_the_end_of_a_shortened_rule_is_ended_not_crashed() -> None:
    long = make_engine(
        "templates: {x: X}\nrules: [{name: w, trigger: signup, cancel_on: [stop], steps: "
        "[{delay: 0s, template: x}, {delay: 1d, template: x}, {delay: 2d, template: x}]}]"
    )
    run = Run(long).send(ev("signup", T0, "s")).tick(T0 + D)
    assert run.state is not None and run.state.armed["w"].step == 2
    short = make_engine("templates: {x: X}\nrules: [{name: w, trigger: signup, template: x}]")
    run.engine = short  # a new config version, the same state
    run.send(ev("login", T0 + D + H, "l"), ev("signup", T0 + D + 2 * H, "s2"))
    run.tick(T0 + 3 * D)
    assert run.state.armed == {}
    assert [t.step for t in run.triggers()] == [0, 1]
