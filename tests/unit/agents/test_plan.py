"""A step is encoded whole before anything is sent: a state that cannot be stored fails
here, before its decisions could reach the audit topic (issue 21.5)."""

from __future__ import annotations

import msgspec
import pytest

from nudgeflow.agents.plan import plan
from nudgeflow.engine.actions import Decision, Trigger
from nudgeflow.engine.state import decode_state
from tests.unit.engine.helpers import T0, M, ev, make_engine

CONFIG = """
templates: {t.j2: "Hi"}
rules:
  - {name: cart, trigger: cart_add, inactivity: 30m, activity: [cart_add, view], template: t.j2}
  - {name: now, trigger: ping, template: t.j2}
"""


def test_a_state_over_2_64_fails_before_any_record_is_encoded_for_sending() -> None:
    huge = ev("cart_add", T0, "a", product_id="p", price=120, quantity=1e308)
    step = make_engine(CONFIG).apply(None, huge, T0)
    assert [d.outcome for d in step.actions if isinstance(d, Decision)] == ["armed"]
    with pytest.raises(OverflowError):
        plan(step.state, step.actions)


def test_records_in_action_order_and_the_state_remembers_its_decisions() -> None:
    step = make_engine(CONFIG).apply(None, ev("ping", T0, "p"), T0)
    planned = plan(step.state, step.actions)
    kinds = [type(a).__name__ for a, _ in planned.records]
    assert kinds == [type(a).__name__ for a in step.actions] and "Trigger" in kinds
    trigger = next(v for a, v in planned.records if isinstance(a, Trigger))
    assert msgspec.json.decode(trigger)["rule"] == "now"
    stored = decode_state(planned.state)
    assert [d.outcome for d in stored.recent] == [
        a.outcome for a in step.actions if isinstance(a, Decision)
    ]


def test_rearmed_is_counted_not_sent_and_a_later_deadline_keeps_the_index_entry() -> None:
    engine = make_engine(CONFIG)
    first = engine.apply(None, ev("cart_add", T0, "a", product_id="p", price=10), T0)
    armed = plan(first.state, first.actions)
    assert armed.refile and armed.indexed_before is None and armed.indexed == T0 + 30 * M
    state = decode_state(armed.state)
    pushed = engine.apply(state, ev("view", T0 + M, "v"), T0 + M)
    again = plan(pushed.state, pushed.actions)
    assert [v for a, v in again.records if getattr(a, "outcome", "") == "rearmed"] == [b""]
    assert not again.refile and again.indexed == T0 + 30 * M  # lazy: tables/timers.py


def test_a_consumed_entry_is_refiled_or_dropped() -> None:
    engine = make_engine(CONFIG)
    first = engine.apply(None, ev("cart_add", T0, "a", product_id="p", price=10), T0)
    state = decode_state(plan(first.state, first.actions).state)
    fired = engine.fire_due(state, T0 + 30 * M)
    done = plan(fired.state, fired.actions, consumed=True)
    assert done.refile and done.indexed_before == T0 + 30 * M and done.indexed is None
