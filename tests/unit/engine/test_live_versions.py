"""Live rules in the engine (DESIGN §3.3): a paused rule, a run whose rule is gone."""

from __future__ import annotations

from nudgeflow.config.build import build_engine
from nudgeflow.config.versions import load_document
from tests.unit.engine.helpers import T0, H, M, Run, ev, make_engine

RULES = """
templates: {x: "hi {{ user.id }}"}
rules:
  - {name: cart, trigger: cart_add, inactivity: 30m, template: x}
  - {name: other, trigger: signup, steps: [{delay: 1h, template: x}]}
"""


def test_a_paused_rule_records_its_due_send_as_suppressed_and_keeps_its_runs() -> None:
    live = make_engine(RULES)
    paused = build_engine(load_document(RULES, paused=["cart"], env={}), secret=b"test-secret")
    run = Run(paused).send(ev("cart_add", T0, "c1"), ev("signup", T0, "s1"))
    run.tick(T0 + 2 * H)
    suppressed = run.decisions("suppressed", "cart")
    assert [(d.reason, d.user_id) for d in suppressed] == [("paused", "u1")]
    assert [t.rule for t in run.triggers()] == ["other"]  # the bystander still sends
    run.engine = live  # resumed: the next arming sends again
    run.send(ev("cart_add", T0 + 3 * H, "c2")).tick(T0 + 3 * H + 31 * M)
    assert [t.rule for t in run.triggers()] == ["other", "cart"]


def test_a_run_of_a_removed_rule_ends_with_rule_removed() -> None:
    run = Run(make_engine(RULES)).send(ev("signup", T0, "s1"))
    assert run.state is not None and "other" in run.state.armed
    run.engine = make_engine(RULES.replace("  - {name: other", "  # - {name: other"))
    run.tick(T0 + 2 * H)
    removed = run.decisions("rule_removed")
    assert [(d.rule, d.reason, d.variant) for d in removed] == [("other", "rule", "default")]
    assert run.state.armed == {} and run.triggers() == []
