"""Aggregates over the audit topics: funnels counted once per trigger, experiment results."""

from __future__ import annotations

import math

import msgspec
import pytest

from nudgeflow.analytics.aggregates import Aggregates
from nudgeflow.analytics.service import refresh_bandits
from nudgeflow.delivery.records import DeliveryAttempt
from nudgeflow.engine.actions import Conversion, Decision, Trigger
from nudgeflow.engine.rules import Experiment, Rule, SeriesStep, Variant
from nudgeflow.engine.stats import two_proportion_p_value
from tests import factories

RULE = Rule(
    name="cart",
    triggers=frozenset({"cart_add"}),
    steps=(SeriesStep(0, None),),
    experiment=Experiment(
        name="cart",
        variants=(Variant("a", 45), Variant("b", 45), Variant("control", 10, send=False)),
        allocation="bandit",
        conversion_event="purchase",
    ),
)
PLAIN = Rule(name="ping", triggers=frozenset({"ping"}), steps=(SeriesStep(0, None),))


def trigger(tid: str, variant: str, *, rule: str = "cart", send: bool = True) -> Trigger:
    return factories.trigger(
        tid,
        rule=rule,
        user_id=f"user-{tid}",
        variant=variant,
        at="2024-05-01T12:00:00.000Z",
        armed_at="2024-05-01T11:30:00.000Z",
        message="",
        destinations=["hook"],
        send=send,
    )


def conversion(tid: str, variant: str, kind: str = "conversion") -> Conversion:
    return Conversion(
        user_id=f"user-{tid}",
        rule="cart",
        variant=variant,
        trigger_id=tid,
        kind=kind,  # type: ignore[arg-type]
        event_type="purchase",
        at="2024-05-01T13:00:00.000Z",
        exposed_at="2024-05-01T12:00:00.000Z",
    )


def delivered(tid: str, outcome: str = "delivered") -> DeliveryAttempt:
    return DeliveryAttempt(
        trigger_id=tid,
        rule="cart",
        destination="hook",
        attempt=1,
        outcome=outcome,
        latency_s=0.01,
        at="2024-05-01T12:00:01Z",
    )


@pytest.fixture
def agg() -> Aggregates:
    return Aggregates([RULE, PLAIN])


def _variant(body: dict, name: str) -> dict:
    return next(v for v in body["variants"] if v["variant"] == name)


def test_a_trigger_written_twice_counts_once_and_feeds_once(agg: Aggregates) -> None:
    assert agg.on_trigger(trigger("t1", "a")) is not None
    assert agg.on_trigger(trigger("t1", "a")) is None  # sent again after a crash
    body = agg.experiment("cart")
    assert body is not None
    assert _variant(body, "a")["exposures"] == 1
    assert [i["trigger_id"] for i in agg.recent() if i["kind"] == "trigger"] == ["t1"]


def test_funnel_per_variant(agg: Aggregates) -> None:
    agg.on_trigger(trigger("t1", "a"))
    agg.on_trigger(trigger("t2", "a"))
    agg.on_trigger(trigger("t3", "control", send=False))
    agg.on_delivery(delivered("t1", "retry"))  # not delivered yet
    agg.on_delivery(delivered("t1"))
    agg.on_delivery(delivered("t1"))  # a second destination or a replay: still one
    agg.on_conversion(conversion("t1", "a", "opened"))
    agg.on_conversion(conversion("t1", "a", "clicked"))
    agg.on_conversion(conversion("t1", "a"))
    agg.on_conversion(conversion("t1", "a"))  # duplicate record
    agg.on_conversion(conversion("t3", "control"))
    body = agg.experiment("cart")
    assert body is not None
    a, control = _variant(body, "a"), _variant(body, "control")
    assert (a["exposures"], a["sent"], a["delivered"]) == (2, 2, 1)
    assert (a["opened"], a["clicked"], a["converted"]) == (1, 1, 1)
    assert (control["exposures"], control["sent"], control["converted"]) == (1, 0, 1)
    assert body["control"] == "control" and control["is_control"]
    assert a["conversion_rate"] == 0.5
    assert a["uplift_abs"] == pytest.approx(-0.5)
    assert a["p_value"] == pytest.approx(two_proportion_p_value(1, 2, 1, 1))
    assert 0.0 < a["ci_low"] < 0.5 < a["ci_high"] < 1.0


def test_bandit_posteriors_are_reported_and_fed_to_the_engine(agg: Aggregates) -> None:
    for i in range(10):
        agg.on_trigger(trigger(f"a{i}", "a"))
    for i in range(4):
        agg.on_trigger(trigger(f"b{i}", "b"))
    for i in range(3):
        agg.on_conversion(conversion(f"a{i}", "a"))
    body = agg.experiment("cart")
    assert body is not None
    assert body["bandit"]["a"]["alpha"] == 4.0 and body["bandit"]["a"]["beta"] == 8.0
    assert body["bandit"]["b"]["alpha"] == 1.0 and body["bandit"]["b"]["beta"] == 5.0

    class FakeEngine:
        bandits: dict = {}

    engine = FakeEngine()
    assert refresh_bandits(engine, agg) == ["cart"]  # type: ignore[arg-type]
    posterior = engine.bandits["cart"]
    assert posterior.posterior("a") == (4.0, 8.0)
    assert posterior.posterior("b") == (1.0, 5.0)


def test_decision_counters_split_suppressions_by_reason(agg: Aggregates) -> None:
    def decide(outcome: str, reason: str | None = None) -> Decision:
        return Decision(user_id="u", rule="cart", outcome=outcome, at="t", reason=reason)  # type: ignore[arg-type]

    for d in [decide("armed", "cart_add"), decide("fired"), decide("suppressed", "cap")]:
        agg.on_decision(d)
    agg.on_decision(decide("suppressed", "cap"))
    agg.on_decision(decide("deferred", "quiet_hours"))
    assert agg.decision_counters() == {
        "cart": {"armed": 1, "deferred:quiet_hours": 1, "fired": 1, "suppressed:cap": 2}
    }


def test_rules_without_experiment_have_no_results_but_count_triggers(agg: Aggregates) -> None:
    agg.on_trigger(trigger("p1", "default", rule="ping"))
    assert agg.experiment("ping") is None
    assert agg.experiment("nope") is None
    assert agg.triggers["ping"] == 1
    assert [e["rule"] for e in agg.experiments()] == ["cart"]


def test_feed_is_a_bounded_ring_buffer() -> None:
    agg = Aggregates([RULE], feed_size=3)
    for i in range(5):
        agg.on_trigger(trigger(f"t{i}", "a"))
    assert [i["trigger_id"] for i in agg.recent()] == ["t2", "t3", "t4"]


def test_empty_variant_has_no_rate(agg: Aggregates) -> None:
    body = agg.experiment("cart")
    assert body is not None
    b = _variant(body, "b")
    assert b["exposures"] == 0 and b["conversion_rate"] is None and b["ci_low"] is None
    assert not math.isnan(body["bandit"]["b"]["mean"])


def test_trigger_memory_is_bounded_and_forgets_the_oldest_half_first() -> None:
    agg = Aggregates([RULE], memory=4)
    for i in range(4):
        agg.on_trigger(trigger(f"t{i}", "a"))
    assert len(agg._triggers) == 4
    assert agg.on_trigger(trigger("t0", "a")) is None  # still remembered: a repeat

    agg.on_trigger(trigger("t4", "a"))  # a new generation: t0 and t1 are forgotten
    agg.on_trigger(trigger("t5", "a"))

    assert len(agg._triggers) == 4
    assert agg.on_trigger(trigger("t3", "a")) is None
    assert agg.on_trigger(trigger("t0", "a")) is not None  # past the memory: counted again
    body = agg.experiment("cart")
    assert body is not None
    assert _variant(body, "a")["exposures"] == 7


def test_a_delivery_is_attributed_to_its_triggers_variant(agg: Aggregates) -> None:
    agg.on_trigger(trigger("t1", "b"))
    agg.on_delivery(delivered("t1"))
    agg.on_delivery(delivered("unknown"))  # its trigger is not read (yet): not counted
    body = agg.experiment("cart")
    assert body is not None
    assert _variant(body, "b")["delivered"] == 1
    assert sum(v["delivered"] for v in body["variants"]) == 1


def test_a_delivery_read_before_its_trigger_counts_when_the_trigger_arrives(
    agg: Aggregates,
) -> None:
    """Topics are read in no particular order relative to each other."""
    agg.on_delivery(delivered("t1"))
    agg.on_delivery(delivered("t1"))  # a second destination: still one
    body = agg.experiment("cart")
    assert body is not None
    assert sum(v["delivered"] for v in body["variants"]) == 0  # no variant to credit yet
    agg.on_trigger(trigger("t1", "b"))
    agg.on_trigger(trigger("t1", "b"))  # replayed after a crash
    agg.on_delivery(delivered("t1"))
    body = agg.experiment("cart")
    assert body is not None
    assert (_variant(body, "b")["exposures"], _variant(body, "b")["delivered"]) == (1, 1)
    assert sum(v["delivered"] for v in body["variants"]) == 1


def test_sends_are_counted_per_rule_and_rules_version_once_per_trigger() -> None:
    agg = Aggregates([RULE, PLAIN])
    for tid, version in [("v1a", 1), ("v1b", 1), ("v2a", 2), ("v1a", 1)]:  # v1a read twice
        agg.on_trigger(msgspec.structs.replace(trigger(tid, "a"), rule_version=version))
    agg.on_trigger(msgspec.structs.replace(trigger("ctl", "control", send=False), rule_version=2))
    agg.on_trigger(trigger("p", "default", rule="ping"))  # before live rules: version 0
    assert agg.version_sends() == {"cart": {"1": 2, "2": 1}, "ping": {"0": 1}}
