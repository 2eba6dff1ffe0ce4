"""Journey validation at load: each mistake names the rule, the step and the field."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from nudgeflow.config.loader import ConfigError, NudgeflowConfig, load_config_text
from nudgeflow.engine.steps import Branch, Exit, Send, Split

HEAD = """
templates: {t.j2: "Hi"}
destinations: {zapier: {url: "https://hooks.zapier.com/x", secret: "whsec_abc"}}
rules:
  - name: j
    trigger: cart_add
"""


def load(text: str) -> NudgeflowConfig:
    return load_config_text(textwrap.dedent(text), base_dir=Path("/nonexistent"), env={})


def rule_with(body: str) -> str:
    return HEAD + textwrap.indent(textwrap.dedent(body).strip() + "\n", "    ")


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            "steps: [{wait: {delay: 1h, inactivity: 2h}}]",
            "rules[j].steps[0].wait: a wait is exactly one of delay, inactivity or until",
        ),
        ("steps: [{wait: {delay: 1x}}]", "rules[j].steps[0].wait.delay: invalid duration '1x'"),
        (
            "steps: [{send: {template: t.j2}, wait: {delay: 1h}}]",
            "rules[j].steps[0]: a step is exactly one of wait, send, branch, split, exit",
        ),
        ("steps: [{snd: {template: t.j2}}]", "rules[j].steps[0].snd: unknown key"),
        (
            "steps: [{send: {template: missing.j2}}]",
            "rules[j].steps[0].send.template: template 'missing.j2'",
        ),
        (
            "steps: [{send: {template: t.j2, destinations: [zapeir]}}]",
            "rules[j].steps[0].send.destinations[0]: unknown destination 'zapeir'",
        ),
        (
            "steps: [{send: {template: t.j2, when: 'cart.value >'}}]",
            "rules[j].steps[0].send.when: does not compile",
        ),
        (
            "steps: [{branch: {if: 'cart.value > 1'}}]",
            "rules[j].steps[0].branch: a branch needs then or else",
        ),
        ("reentry: sometimes", "rules[j].reentry: reentry 'sometimes': use never, always or after"),
        ("reentry: after 7x", "rules[j].reentry: invalid duration '7x'"),
        (
            "steps: [{delay: 0s, template: t.j2}, {send: {template: t.j2}}]",
            "rules[j].steps: use either {delay, template} steps or journey steps, not both",
        ),
        (
            "inactivity: 1h\nsteps: [{send: {template: t.j2}}]",
            "rules[j].inactivity: a journey sets inactivity in a wait step, not on the rule",
        ),
        (
            "steps: [{name: a, send: {template: t.j2}}, {name: a, exit: true}]",
            "rules[j].steps[1].name: duplicate step name 'a'",
        ),
        (
            "steps: [{name: '3', exit: true}]",
            "rules[j].steps[0].name: a step name must not be a number",
        ),
        ("exit_on: [cart_add]", "rules[j].exit_on: cart_add both arms and cancels the rule"),
    ],
)
def test_journey_mistakes_name_rule_step_and_field(body: str, expected: str) -> None:
    """Other mistakes (the cases of issue 18, item 6 are checked word for word below)."""
    with pytest.raises(ConfigError) as info:
        load(rule_with(body))
    assert expected in str(info.value)


LOOP = " (add a wait with a duration)"
INACTIVITY = (
    "write journey steps: `- wait: {inactivity: 30m, activity: [...]}` then"
    " `- send: {template: ...}`"
)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        # A jump to an unknown step, from each place a jump can be written.
        (
            "steps: [{wait: {until: clicked, within: 1d, then: clikced}},"
            " {name: clicked, send: {template: t.j2}}]",
            "rules[j].steps[0].wait.then: unknown step 'clikced' (named steps: clicked)",
        ),
        (
            "steps: [{wait: {until: clicked, within: 1d, else: nowhere}}, {exit: true}]",
            "rules[j].steps[0].wait.else: unknown step 'nowhere' (no step has a name)",
        ),
        (
            "steps: [{branch: {if: 'cart.value > 1', then: gone}}, {name: here, exit: true}]",
            "rules[j].steps[0].branch.then: unknown step 'gone' (named steps: here)",
        ),
        (
            "steps: [{split: {a: {weight: 1, then: gone}, b: {weight: 1}}}, {exit: true}]",
            "rules[j].steps[0].split.a.then: unknown step 'gone' (no step has a name)",
        ),
        # A loop with no wait on it (a zero delay is no wait).
        (
            "steps: [{name: top, send: {template: t.j2}},"
            " {branch: {if: 'cart.value > 1', then: top}}]",
            "rules[j].steps[0]: a loop with no wait on it would spin:"
            " steps[0] -> steps[1] -> steps[0]" + LOOP,
        ),
        (
            "steps: [{name: top, wait: {delay: 0s}}, {branch: {if: 'true', then: top}}]",
            "rules[j].steps[0]: a loop with no wait on it would spin:"
            " steps[0] -> steps[1] -> steps[0]" + LOOP,
        ),
        # A send with no template and no rule template to default to.
        (
            "steps: [{wait: {delay: 1h}}, {send: {destinations: [zapier]}}]",
            "rules[j].steps[1].send.template: a send needs a template"
            " (or the rule's template as default)",
        ),
        # An until without within.
        (
            "steps: [{wait: {until: message_clicked}}]",
            "rules[j].steps[0].wait.within: until needs within: how long to wait for the event",
        ),
        # The issue's first complaint: both ways of asking for an inactivity wait in a series
        # now say how to write it (the step form used to be only "unknown key").
        (
            "steps: [{inactivity: 30m, template: t.j2}]",
            "rules[j].steps[0]: a {delay, template} step cannot wait for inactivity: " + INACTIVITY,
        ),
        (
            "inactivity: 30m\nsteps: [{delay: 1h, template: t.j2}]",
            "rules[j].inactivity: a rule with steps waits for inactivity in a step: " + INACTIVITY,
        ),
        # instance and entry expressions that do not compile.
        (
            "instance: 'event.properties.'",
            "rules[j].instance: does not compile: expected name or number in 'event.properties.'",
        ),
        (
            "entry: 'cart.value >'",
            "rules[j].entry: does not compile: unexpected 'end of expression' in 'cart.value >'",
        ),
        (
            "entry: 'cart.value > limit'",
            "rules[j].entry: unknown name 'limit' (allowed: cart, count, event, now, sum, user)"
            " in 'cart.value > limit'",
        ),
    ],
)
def test_the_issue_18_load_errors_word_for_word(body: str, message: str) -> None:
    """Issue 18, item 6: the whole message, as `nudgeflow` prints it (file: rule.step.field)."""
    with pytest.raises(ConfigError) as info:
        load(rule_with(body))
    assert str(info.value) == f"nudgeflow.yaml: {message}"


def test_a_journey_compiles_to_a_program_with_jumps_as_indexes() -> None:
    config = load(
        rule_with(
            """
            template: t.j2
            exit_on: purchase
            cancel_on: [logout]
            reentry: after 7d
            instance: event.properties.cart_id
            steps:
              - wait: {inactivity: 30m, activity: [cart_add]}
              - send
              - wait: {until: [message_clicked, message_opened], within: 1d, then: engaged}
              - split: {a: {weight: 1, then: engaged}, b: {weight: 1}}
              - exit
              - name: engaged
                branch: {if: "count('purchase', '1d') == 0", else: done}
              - send: {destinations: [zapier], send_at: {best_hour: true, within: 24h}}
              - name: done
                exit: true
            """
        )
    )
    [rule] = config.rules
    assert rule.flow and rule.keyed and rule.cancel_on == {"purchase", "logout"}
    assert rule.reentry.mode == "after" and rule.reentry.after_ms == 7 * 86_400_000
    program = rule.program
    assert [n.label for n in program] == [0, 1, 2, 3, 4, "engaged", 6, "done"]
    assert [n.kind for n in program] == [
        "wait",
        "send",
        "wait",
        "split",
        "exit",
        "branch",
        "send",
        "exit",
    ]
    wait = program[2].wait
    assert wait is not None and (wait.kind, wait.then, wait.otherwise) == ("until", 5, None)
    assert wait.until == {"message_clicked", "message_opened"}
    send = program[1].action
    assert isinstance(send, Send) and send.template == "t.j2" and send.destinations == ("zapier",)
    split = program[3].action
    assert isinstance(split, Split) and split.target("a") == 5 and split.target("b") is None
    branch = program[5].action
    assert isinstance(branch, Branch) and (branch.then, branch.otherwise) == (None, 7)
    last = program[6].action
    assert isinstance(last, Send) and last.send_at is not None
    assert last.send_at.within_ms == 86_400_000
    assert isinstance(program[7].action, Exit)


def test_the_old_forms_compile_to_the_same_machine() -> None:
    config = load(HEAD + "    inactivity: 30m\n    template: t.j2\n")
    [node] = config.rules[0].program
    assert (node.label, node.kind, node.next) == (0, "send", None)
    assert node.wait is not None and node.wait.kind == "rule"
    assert not config.rules[0].flow


def test_max_runs_is_a_limit() -> None:
    config = load("limits: {max_runs: 4}\n" + HEAD.split("rules:")[0])
    assert config.limits.max_runs == 4
    with pytest.raises(ConfigError, match=r"limits\.max_runs"):
        load("limits: {max_runs: 0}\n")
