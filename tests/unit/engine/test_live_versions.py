"""Live rules in the engine (DESIGN §3.3): a paused rule, a run whose rule is gone, runs in
progress under a new version (the step of the same name, else the same index)."""

from __future__ import annotations

import msgspec

from nudgeflow.config.build import build_engine
from nudgeflow.config.versions import load_document
from nudgeflow.engine.state import decode_state
from tests.unit.engine.helpers import T0, D, H, M, Run, ev, make_engine, names

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


# -- runs in progress under a new version: the step of the same name, else index --------

FLOW = """
templates: {a: "a", b: "b", c: "c"}
rules:
  - name: j
    trigger: signup
    steps:
{steps}
"""
V1 = """\
      - {name: first, send: {template: a}}
      - {name: second, wait: {delay: 1d}}
      - {name: third, send: {template: b}}
"""
EXTRA = "      - {name: extra, send: {template: c}}\n"


def _flow(steps: str) -> str:
    return FLOW.replace("{steps}", steps)


def _at_second() -> Run:
    """A run of V1 that sent `first` and waits at `second` (index 1) until T0 + 1d."""
    run = Run(make_engine(_flow(V1))).send(ev("signup", T0, "s1"))
    assert run.state is not None
    armed = run.state.armed["j"]
    assert (armed.step, armed.name, armed.deadline) == (1, "second", T0 + D)
    assert names(run.triggers()) == [("j", "first")]
    return run


def test_a_step_inserted_before_the_run_moves_it_to_the_new_index_of_its_name() -> None:
    run = _at_second()
    run.engine = make_engine(
        _flow(V1.replace("      - {name: second", EXTRA + "      - {name: second"))
    )
    run.tick(T0 + D)
    assert names(run.triggers()) == [("j", "first"), ("j", "third")]  # not `extra`
    ended = run.decisions("exited", "j")
    assert [(d.reason, d.detail["step"]) for d in ended] == [("completed", "third")]
    assert run.state is not None and run.state.armed == {}


def test_a_reordered_version_follows_the_name() -> None:
    run = _at_second()
    reordered = """\
      - {name: first, send: {template: a}}
      - {name: third, send: {template: b}}
      - {name: second, wait: {delay: 1d}}
"""
    run.engine = make_engine(_flow(reordered))
    run.tick(T0 + D)  # at `second` (now last): its wait is over and the flow ends
    assert names(run.triggers()) == [("j", "first")]  # index 1 would have sent `third`
    ended = run.decisions("exited", "j")
    assert [(d.reason, d.detail["step"]) for d in ended] == [("completed", "second")]


def test_a_version_without_the_name_continues_at_the_same_index() -> None:
    run = _at_second()
    run.engine = make_engine(
        _flow(V1.replace("name: second, wait: {delay: 1d}", "name: pause, wait: {delay: 2d}"))
    )
    run.tick(T0 + D)  # the deadline it had: the new node only decides where it goes next
    assert names(run.triggers()) == [("j", "first"), ("j", "third")]
    assert run.decisions("rule_removed") == []


def test_a_version_with_neither_the_name_nor_the_index_ends_the_run_rule_removed() -> None:
    run = _at_second()
    run.engine = make_engine(_flow("      - {name: first, send: {template: a}}\n"))
    run.tick(T0 + D)
    removed = run.decisions("rule_removed", "j")
    assert [(d.reason, d.detail["step"]) for d in removed] == [("step", "second")]
    assert run.state is not None and run.state.armed == {}
    assert names(run.triggers()) == [("j", "first")]


def test_an_awaited_event_finds_its_run_at_the_new_index_of_its_step() -> None:
    listen = """\
      - {name: ask, send: {template: a}}
      - {name: listen, wait: {until: message_clicked, within: 1d, then: thanks}}
      - {name: nudge, send: {template: b}}
      - exit
      - {name: thanks, send: {template: c}}
"""
    run = Run(make_engine(_flow(listen))).send(ev("signup", T0, "s1"))
    run.engine = make_engine(_flow(EXTRA + listen))  # every step one index later
    run.send(ev("message_clicked", T0 + H, "k1"))
    assert names(run.triggers()) == [("j", "ask"), ("j", "thanks")]
    waited = run.decisions("waited", "j")
    assert [(d.reason, d.detail["step"], d.detail["to"]) for d in waited] == [
        ("message_clicked", "listen", "thanks")
    ]


def test_a_run_stored_before_step_names_were_kept_follows_its_index() -> None:
    run = _at_second()
    assert run.state is not None
    fields = list(msgspec.structs.astuple(run.state.armed["j"]))[:-1]  # no `name`: an old state
    old = msgspec.msgpack.encode({"u": "u1", "a": {"j": fields}, "t": T0})
    run.state = decode_state(old)
    assert run.state.armed["j"].name is None
    run.engine = make_engine(
        _flow(V1.replace("      - {name: second", EXTRA + "      - {name: second"))
    )
    run.tick(T0 + D)  # at index 1, now `extra`: it sends c and then waits at `second`
    assert names(run.triggers())[-1] == ("j", "extra")
    assert (run.state.armed["j"].step, run.state.armed["j"].name) == (2, "second")
