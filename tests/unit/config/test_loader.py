"""nudgeflow.yaml loading: the defaults load; each kind of mistake names rule and field."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from nudgeflow.config.loader import (
    DEFAULT_CONFIG,
    DEV_CONFIG,
    ConfigError,
    load_config,
    load_config_text,
)

GOOD_RULE = """
  - name: r
    trigger: cart_add
    inactivity: 30m
    template: t.j2
"""


def load(text: str, env: dict[str, str] | None = None, base_dir: Path = Path("/nonexistent")):
    return load_config_text(textwrap.dedent(text), base_dir=base_dir, env=env or {})


def test_default_config_loads_the_five_rules_and_the_cart_recovery_journey() -> None:
    config = load_config(DEFAULT_CONFIG, env={})
    assert [r.name for r in config.rules] == [
        "abandoned_cart",
        "browse_abandonment",
        "re_engagement",
        "welcome_series",
        "post_purchase",
        "cart_recovery",
    ]
    cart = config.rules[0]
    assert cart.inactivity_ms == 30 * 60_000 and cart.cooldown_ms == 86_400_000
    assert cart.when is not None and cart.when.source == "cart.value > 50"
    assert cart.destinations == ("demo",)  # default: every destination
    assert len(config.rules[3].steps) == 3
    assert config.limits.cap is not None and config.limits.cap.count == 3
    assert config.templates_dir == DEFAULT_CONFIG.parent / "templates"


def test_dev_config_loads_and_says_it_is_shortened() -> None:
    config = load_config(DEV_CONFIG, env={"NUDGEFLOW_DEMO_PORT": "7001"})
    assert "SHORTENED" in DEV_CONFIG.read_text()
    assert config.rules[0].inactivity_ms == 30_000
    assert str(config.destinations["demo"].url).startswith("http://127.0.0.1:7001/")


def test_templates_dir_is_relative_to_the_file(tmp_path: Path) -> None:
    (tmp_path / "msgs").mkdir()
    (tmp_path / "msgs" / "t.j2").write_text("Hi {{ user.name }}")
    (tmp_path / "n.yaml").write_text(f"templates_dir: msgs\nrules:{GOOD_RULE}")
    config = load_config(tmp_path / "n.yaml")
    assert config.templates_dir == (tmp_path / "msgs").resolve()


BASE = """
templates: {t.j2: "Hi {{ user.name }}"}
destinations: {zapier: {url: "https://hooks.zapier.com/x", secret: "whsec_abc"}}
"""


@pytest.mark.parametrize(
    ("yaml_text", "expected"),
    [
        (
            BASE + "rules: [{name: abandoned_cart, trigger: cart_add, inactivity: 30x}]",
            "nudgeflow.yaml: rules[abandoned_cart].inactivity: invalid duration '30x' "
            "(use 30s, 15m, 2h, 7d)",
        ),
        (
            BASE + "rules: [{name: r, trigger: a, delay: 1h, colldown: 1h}]",
            "rules[r].colldown: unknown key",
        ),
        (BASE + "rulez: []", "rulez: unknown key"),
        (
            BASE + "rules: [{name: r, trigger: a, when: 'cart.value > limit'}]",
            "rules[r].when: unknown name 'limit'",
        ),
        (
            BASE + "rules: [{name: r, trigger: a, when: 'cart.value >'}]",
            "rules[r].when: does not compile",
        ),
        (
            BASE + "rules: [{name: r, trigger: a, when: 'total(1) > 2'}]",
            "rules[r].when: unknown name 'total'",
        ),
        (
            BASE + "rules: [{name: r, trigger: a, when: \"count('a', '2x') > 2\"}]",
            "rules[r].when: count(): invalid duration '2x'",
        ),
        (
            BASE + "rules: [{name: r, trigger: a, template: missing.j2}]",
            "rules[r].template: template 'missing.j2'",
        ),
        (
            BASE.replace("Hi {{ user.name }}", "Hi {{ user.name }")
            + "rules: [{name: r, trigger: a, template: t.j2}]",
            "rules[r].template: template 't.j2' line 1: syntax error",
        ),
        (
            BASE + "rules: [{name: r, trigger: a, destinations: [zapeir]}]",
            "rules[r].destinations[0]: unknown destination 'zapeir' (known: zapier)",
        ),
        (
            BASE + "rules: [{name: r, trigger: a}, {name: r, trigger: b}]",
            "rules[r].name: duplicate rule name 'r'",
        ),
        (
            BASE + "rules: [{name: r, trigger: a, delay: 1h, inactivity: 2h}]",
            "rules[r].delay: use either delay or inactivity, not both",
        ),
        (
            BASE + "rules: [{name: r, trigger: a, experiment: {variants: {x: {weight: 0}}}}]",
            "rules[r].experiment.variants: variant weights must add up to more than 0",
        ),
        (
            BASE + "rules: [{name: r, trigger: a, experiment: {variants: {x: {weight: -1}}}}]",
            "rules[r].experiment.variants.x.weight: Input should be greater than or equal to 0",
        ),
        (
            BASE + "rules: [{name: r, trigger: a, delay: 1h,"
            " experiment: {variants: {x: {weight: 1, inactivity: 5m}}}}]",
            "rules[r].experiment.variants.x.inactivity: the rule uses delay",
        ),
        (BASE + "rules: [{name: r, delay: 1h}]", "rules[r].trigger: required field missing"),
        (
            BASE + "rules: [{name: r, trigger: a, activity: [b]}]",
            "rules[r].activity: activity only matters with inactivity",
        ),
        (
            BASE + "rules: [{name: r, trigger: a,"
            " steps: [{delay: 1d, template: t.j2}, {delay: 1h, template: t.j2}]}]",
            "rules[r].steps: step delays must not decrease",
        ),
        (
            BASE + "rules: [{name: r, trigger: a,"
            " steps: [{delay: 1d, template: t.j2}], template: t.j2}]",
            "rules[r].template: a rule with steps sets template per step",
        ),
        (
            BASE + "rules: [{name: r, trigger: a, cancel_on: [a]}]",
            "rules[r].cancel_on: a both arms and cancels the rule",
        ),
        (
            BASE + "limits: {quiet_hours: {start: '25:00', end: '08:00'}}",
            "limits.quiet_hours.start: invalid time '25:00'",
        ),
        (
            BASE
            + "limits: {quiet_hours: {start: '21:00', end: '08:00', fallback_timezone: Mars/Base}}",
            "limits.quiet_hours.fallback_timezone: unknown time zone 'Mars/Base'",
        ),
        (
            BASE + "limits: {max_per_user: {count: 3, per: 0s}}",
            "limits.max_per_user.per: duration '0s' must be greater than zero",
        ),
        (BASE + "settings: {brokr: 'x:1'}", "settings.brokr"),
        (BASE + "rules: [{name: r, trigger: a}\n", "nudgeflow.yaml: line"),
    ],
)
def test_mistakes_name_the_rule_and_field(yaml_text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        load(yaml_text)
    assert expected in str(info.value)
    assert str(info.value).startswith("nudgeflow.yaml: ")


def test_missing_environment_variable_is_named() -> None:
    text = 'destinations: {z: {url: "https://e.com/h", secret: "${ZAPIER_SECRET}"}}'
    with pytest.raises(
        ConfigError, match=r"destinations\.z\.secret: environment variable ZAPIER_SECRET is not set"
    ):
        load(text)
    config = load(text, env={"ZAPIER_SECRET": "whsec_c2VjcmV0"})
    secret = config.destinations["z"].secret
    assert secret is not None and secret.get_secret_value() == "whsec_c2VjcmV0"


def test_secret_values_are_never_echoed() -> None:
    text = 'destinations: {z: {url: "https://e.com/h", secret: "${S}"}}'
    with pytest.raises(ConfigError) as info:
        load(text, env={"S": "hunter2-very-secret"})
    assert "whsec_" in str(info.value)
    assert "hunter2" not in str(info.value)


def test_env_default_is_used_when_unset() -> None:
    config = load('settings: {topic_prefix: "${PREFIX:-shop}"}')
    assert config.settings == {"topic_prefix": "shop"}


def test_compiled_rules_use_milliseconds_and_variants() -> None:
    config = load(
        BASE
        + """
rules:
  - name: r
    trigger: [a, b]
    delay: 2h
    experiment:
      name: exp1
      variants: {fast: {weight: 1, delay: 15m}, control: {weight: 1, send: false}}
      conversion: {event: purchase, within: 3d}
"""
    )
    [rule] = config.rules
    assert rule.triggers == {"a", "b"} and rule.steps[0].delay_ms == 7_200_000
    assert rule.experiment is not None and rule.experiment.name == "exp1"
    assert rule.experiment.weights == {"fast": 1, "control": 1}
    assert rule.experiment.conversion_within_ms == 3 * 86_400_000
    fast = rule.experiment.variant("fast")
    assert fast is not None and fast.delay_ms == 900_000
