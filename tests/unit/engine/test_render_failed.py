"""Over budget, one send is `render_failed` naming the limit; everyone else goes on (issue 21.1).

Each template below renders fine for the sample user (the start-up check passes) and for
ordinary users, and goes over one limit only for a user whose traits ask for it: the
decision names that limit, nothing is sent to that user, and a second user in the same
engine (and the hostile user's other rule) still fires.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import msgspec
import pytest

from nudgeflow.backtest.report import Tally
from nudgeflow.cli.explain import verdict
from nudgeflow.config.build import build_engine
from nudgeflow.config.loader import load_config_text
from nudgeflow.engine.funnel import Funnel
from nudgeflow.engine.sandbox.budget import DEFAULT_BUDGET, Budget
from tests.unit.engine.helpers import T0, M, Run, ev, make_engine

# template source, the limit, and the `n` that takes one user over it
RENDERS: list[tuple[str, str, int]] = [
    (  # nested loops over a value the user sends (n = 6,000 took 4.3 s before budgets)
        "{% for i in range(user.n|default(1)) %}{% for j in range(user.n|default(1)) %}"
        "{% endfor %}{% endfor %}ok",
        "loop_iterations",
        6_000,
    ),
    ("{{ ('a' * user.n|default(1))|length }}", "string_length", 200_000_000),
    (  # the tower that ran 25 s in one C call: refused before the call
        "{% set k = user.n|default(1) %}{{ ((((10 ** k) ** k) ** k) ** k) % 7 }}",
        "int_bits",
        64,
    ),
    ("{{ ([0] * user.n|default(1))|length }}", "list_length", 1_000_000_000),
    (
        "{% for i in range(user.n|default(1)) %}{{ 'x' * 1000 }}{% endfor %}",
        "output_length",
        2_000,
    ),
    (  # exponential macro recursion: no loop, no size, only time
        "{% macro f(n) %}{% if n %}{{ f(n - 1) }}{{ f(n - 1) }}{% endif %}{% endmacro %}"
        "{{ f(user.n|default(1)) }}ok",
        "wall_time_ms",
        40,
    ),
]


# Which limit a render hits first must not depend on how busy the machine is: the clock
# gets a minute except where the wall time is the point.
NO_CLOCK = Budget(wall_time_ms=60_000)


def _engine(source: str, budget: Budget = NO_CLOCK) -> Run:
    template = source.replace("'", "''")
    text = f"""
        templates:
          hostile: '{template}'
          plain: 'hi {{{{ user.id }}}}'
        rules:
          - {{name: r, trigger: login, template: hostile}}
          - {{name: other, trigger: login, template: plain}}
        """
    config = load_config_text(textwrap.dedent(text), base_dir=Path("/nonexistent"), env={})
    return Run(build_engine(config, secret=b"test-secret", budget=budget))


@pytest.mark.parametrize(("source", "limit", "n"), RENDERS)
def test_a_render_over_budget_is_render_failed_naming_the_limit(
    source: str, limit: str, n: int
) -> None:
    run = _engine(source, DEFAULT_BUDGET if limit == "wall_time_ms" else NO_CLOCK)
    engine = run.engine
    mallory = run.send(ev("login", T0, "m1", user="mallory", traits={"n": n}))
    [failed] = mallory.decisions("render_failed")
    assert (failed.rule, failed.user_id, failed.reason) == ("r", "mallory", limit)
    assert f"budget exceeded: {limit} > " in str(failed.detail["error"])
    assert failed.detail["template"] == "hostile"
    assert failed.detail["entered"] is True  # the funnel counts the arrival at the step
    assert [t.rule for t in mallory.triggers()] == ["other"]  # her other rule still sends
    assert mallory.decisions("suppressed") == []  # not a template_error

    ana = Run(engine).send(ev("login", T0 + M, "a1", user="ana", traits={"n": 3}))
    assert sorted(t.rule for t in ana.triggers()) == ["other", "r"]
    assert ana.decisions("render_failed") == []


def test_a_template_error_that_is_not_a_budget_stays_template_error() -> None:
    run = _engine("{{ 10 // user.n|default(1) }}")
    run.send(ev("login", T0, "m1", user="m", traits={"n": 0}))  # ZeroDivisionError
    [suppressed] = run.decisions("suppressed")
    assert suppressed.reason == "template_error"
    assert run.decisions("render_failed") == []


WHEN = """
templates: {t: "hi"}
rules:
  - name: r
    trigger: login
    template: t
    when: "('x' * user.n) | length > 0"
  - {name: other, trigger: login, template: t}
"""


def test_a_when_over_budget_is_render_failed_not_condition_false() -> None:
    engine = make_engine(WHEN)
    mallory = Run(engine).send(ev("login", T0, "m1", user="mallory", traits={"n": 10**9}))
    [failed] = mallory.decisions("render_failed")
    assert (failed.rule, failed.reason) == ("r", "string_length")
    assert failed.detail["expression"] == "('x' * user.n) | length > 0"
    assert str(failed.detail["error"]).startswith("budget exceeded: string_length > ")
    assert mallory.decisions("condition_false") == []
    assert [t.rule for t in mallory.triggers()] == ["other"]
    ana = Run(engine).send(ev("login", T0, "a1", user="ana", traits={"n": 3}))
    assert sorted(t.rule for t in ana.triggers()) == ["other", "r"]
    bob = Run(engine).send(ev("login", T0, "b1", user="bob", traits={"n": 0}))
    [false] = bob.decisions("condition_false")  # a plain false stays a plain false
    assert false.reason is None


def test_expressions_run_under_the_workers_budget_not_the_default() -> None:
    """A `when` the default budget allows (a 20,000-char string) is over a worker's
    NUDGEFLOW_RENDER_STRING_LENGTH=1000, as its templates are."""
    config = load_config_text(WHEN, base_dir=Path("/nonexistent"), env={})
    tight = Budget(string_length=1_000, wall_time_ms=60_000)
    event = ev("login", T0, "m1", user="mallory", traits={"n": 20_000})
    default = Run(build_engine(config, secret=b"s", budget=NO_CLOCK)).send(event)
    assert sorted(t.rule for t in default.triggers()) == ["other", "r"]
    worker = Run(build_engine(config, secret=b"s", budget=tight)).send(event)
    [failed] = worker.decisions("render_failed")
    assert (failed.rule, failed.reason) == ("r", "string_length")
    assert [t.rule for t in worker.triggers()] == ["other"]


ENTRY = """
templates: {t: "hi"}
rules:
  - name: r
    trigger: purchase
    delay: 1h
    template: t
    entry: "(10 ** event.properties.total) > 1"
"""


def test_an_entry_over_budget_is_render_failed_naming_the_limit() -> None:
    engine = make_engine(ENTRY)
    run = Run(engine).send(ev("purchase", T0, "o1", user="mallory", total=5000))
    [failed] = run.decisions("render_failed")
    assert (failed.rule, failed.reason) == ("r", "int_bits")
    assert "entered" not in failed.detail  # the run never started
    assert run.decisions("not_entered") == [] and run.decisions("armed") == []
    ana = Run(engine).send(ev("purchase", T0, "o2", user="ana", total=3)).tick(T0 + 2 * 60 * M)
    assert [t.rule for t in ana.triggers()] == ["r"]


def test_the_funnel_counts_render_failed_as_a_suppression() -> None:
    source, _, n = RENDERS[0]
    run = _engine(source).send(ev("login", T0, "m1", user="mallory", traits={"n": n}))
    funnel = Funnel()
    funnel.add(run.actions)
    [step] = funnel.rule("r")
    assert (step["entered"], step["sent"], step["suppressed"]) == (1, 0, {"render_failed": 1})


def test_the_backtest_report_and_explain_name_the_limit() -> None:
    source, _, n = RENDERS[0]
    run = _engine(source).send(ev("login", T0, "m1", user="mallory", traits={"n": n}))
    tally = Tally()
    tally.add(run.actions)
    assert tally.rules["r"].as_dict()["suppressed"] == {"render_failed (loop_iterations)": 1}
    [failed] = run.decisions("render_failed")
    text = verdict({"decisions": [msgspec.to_builtins(failed)]}, "r")
    assert "render budget (loop_iterations)" in text and "template hostile" in text
