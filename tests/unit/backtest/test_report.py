"""The tally of engine records and the text/JSON summary."""

from __future__ import annotations

from click.testing import CliRunner

from nudgeflow.backtest.report import Tally, experiment_summary
from nudgeflow.cli.backtest import command, parse_time
from nudgeflow.engine.actions import Conversion, Decision, Trigger
from tests import factories


def trigger(rule: str, variant: str, step: int = 0, send: bool = True) -> Trigger:
    at = "2024-06-03T00:00:00.000Z"
    return factories.trigger(
        f"t-{rule}-{variant}-{step}",
        rule=rule,
        user_id="u",
        variant=variant,
        step=step,
        at=at,
        armed_at=at,
        message="",
        destinations=[],
        send=send,
    )


def decision(rule: str, outcome: str, reason: str | None = None) -> Decision:
    return Decision(user_id="u", rule=rule, outcome=outcome, at="x", reason=reason)  # type: ignore[arg-type]


def conversion(
    rule: str, variant: str, kind: str = "conversion", revenue: float | None = None
) -> Conversion:
    return Conversion(
        user_id="u",
        rule=rule,
        variant=variant,
        trigger_id="t",
        kind=kind,  # type: ignore[arg-type]
        event_type="purchase",
        at="x",
        exposed_at="x",
        step=0,
        revenue=revenue,
    )


def test_tally_counts_outcomes_per_rule_and_exposures_per_variant() -> None:
    tally = Tally()
    tally.add(
        [
            decision("r", "armed"),
            decision("r", "rearmed"),
            decision("r", "fired"),  # counted from the Trigger, not twice
            trigger("r", "a"),
            trigger("r", "a", step=1),  # a later step is not a new exposure
            trigger("r", "ctl", send=False),
            decision("r", "suppressed", "cooldown"),
            decision("r", "suppressed", "cap"),
            decision("r", "suppressed", "cap"),
            decision("r", "cancelled", "purchase"),
            conversion("r", "a", revenue=120.0),
            conversion("r", "a", "opened"),
            conversion("r", "ctl", revenue=30.5),
        ]
    )
    rule = tally.rule("r")
    assert rule["armed"] == rule["rearmed"] == rule["cancelled"] == 1
    assert (rule["fired"], rule["sent"]) == (3, 2)
    assert rule["suppressed"] == {"cap": 2, "cooldown": 1}
    assert tally.variants[("r", "a")].exposures == 1
    assert tally.attribution.by_variant("r")["a"].opened == 1
    assert (rule["converted"], rule["revenue"], rule["opened"]) == (2, 150.5, 1)
    results = experiment_summary(tally, {"r": (["a", "ctl"], "ctl")})["r"]
    assert results["control"] == "ctl"
    a, ctl = results["variants"]
    assert (a["variant"], a["exposures"], a["converted"], a["sent"]) == ("a", 1, 1, 2)
    assert (ctl["exposures"], ctl["sent"], ctl["is_control"]) == (1, 0, True)
    assert (a["revenue"], ctl["revenue"]) == (120.0, 30.5)  # summed per variant
    assert a["uplift_abs"] == 0.0


def test_parse_time_accepts_iso_and_epoch_ms() -> None:
    assert parse_time("2024-06-03T00:00:00Z") == 1_717_372_800_000
    assert parse_time("2024-06-03T02:00:00+02:00") == 1_717_372_800_000
    assert parse_time("2024-06-03T00:00:00") == 1_717_372_800_000
    assert parse_time("1717372800000") == 1_717_372_800_000


def test_text_summary_and_errors(tmp_path) -> None:  # type: ignore[no-untyped-def]
    config = tmp_path / "n.yaml"
    config.write_text(
        "rules:\n  - name: hello\n    trigger: signup\n"
        "    experiment: {variants: {a: {weight: 1}, control: {weight: 1}}}\n"
    )
    events = tmp_path / "e.jsonl"
    events.write_text('{"user_id":"u1","type":"signup","ts":1717372800000}\nnope\n')
    result = CliRunner().invoke(command, ["--config", str(config), "--events", str(events)])
    assert result.exit_code == 0, result.output
    assert "hello" in result.output
    assert "experiment hello (control: control)" in result.output
    assert "rejected invalid_json: 1" in result.output
    assert "line 2: invalid_json" in result.output
    bad = tmp_path / "bad.yaml"
    bad.write_text("rules:\n  - name: x\n    trigger: signup\n    delay: soon\n")
    result = CliRunner().invoke(command, ["--config", str(bad), "--events", str(events)])
    assert result.exit_code != 0
    assert "delay" in result.output
    result = CliRunner().invoke(
        command, ["--config", str(config), "--events", str(events), "--until", "someday"]
    )
    assert result.exit_code == 2
