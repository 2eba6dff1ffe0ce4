"""The registry itself: naming conventions, build info, sampled gauges."""

from __future__ import annotations

import logging

import msgspec
import pytest
from prometheus_client import CollectorRegistry, generate_latest

from nudgeflow import __version__
from nudgeflow.observability import metrics


def test_names_follow_prometheus_conventions() -> None:
    families = list(metrics.REGISTRY.collect())
    assert len(families) > 30
    for family in families:
        assert family.name.startswith("nudgeflow_"), family.name
        assert not family.name.endswith(("_ms", "_milliseconds")), family.name
        if family.type == "histogram":
            assert family.name.endswith("_seconds"), family.name
        assert family.documentation, family.name


def test_no_label_can_carry_a_user_id_email_or_url() -> None:
    forbidden = {"user", "user_id", "email", "url", "endpoint", "trigger_id", "event_id"}
    for collector in list(metrics.REGISTRY._collector_to_names):  # every metric object
        labels = set(getattr(collector, "_labelnames", ()) or getattr(collector, "labelnames", ()))
        assert not labels & forbidden, (collector, labels)


def test_build_info_names_the_versions() -> None:
    sample = next(
        s for f in metrics.REGISTRY.collect() if f.name == "nudgeflow_build" for s in f.samples
    )
    assert sample.value == 1.0
    assert sample.labels["version"] == __version__
    assert set(sample.labels) == {"version", "python", "faust", "aiokafka"}


def test_a_sampled_gauge_exports_what_its_source_says() -> None:
    registry = CollectorRegistry(auto_describe=True)
    gauge = metrics.SampledGauge("demo_things", "Things", ["kind"], registry)
    assert "demo_things{" not in generate_latest(registry).decode()  # unbound: no samples
    gauge.bind(lambda: [(("a",), 1.0), (("b",), 2.5)])
    assert registry.get_sample_value("demo_things", {"kind": "b"}) == 2.5
    assert "# TYPE demo_things gauge" in generate_latest(registry).decode()


def test_a_failing_source_never_fails_the_scrape(caplog: pytest.LogCaptureFixture) -> None:
    registry = CollectorRegistry(auto_describe=True)
    gauge = metrics.SampledGauge("demo_broken", "Broken", [], registry)

    def broken() -> list:
        raise RuntimeError("boom")

    gauge.bind(broken)
    with caplog.at_level(logging.ERROR):
        text = generate_latest(registry).decode()
    assert "# TYPE demo_broken gauge" in text
    assert "sampling demo_broken failed" in caplog.text


def test_conversions_and_their_revenue_are_counted_per_rule_step_and_variant() -> None:
    from nudgeflow.engine.actions import Conversion
    from nudgeflow.observability.conversions import count_conversion

    def value(name: str, **labels: str) -> float:
        return metrics.REGISTRY.get_sample_value(name, labels) or 0.0

    labels = {"rule": "m-rule", "step": "0", "variant": "a"}
    base = Conversion(
        user_id="u", rule="m-rule", variant="a", trigger_id="t", kind="conversion",
        event_type="purchase", at="x", exposed_at="x", step=0, revenue=120.0,
    )  # fmt: skip
    count_conversion(base)
    count_conversion(msgspec.structs.replace(base, revenue=None))  # counted, no revenue
    count_conversion(msgspec.structs.replace(base, revenue=-5.0))  # a refund: not subtracted
    count_conversion(msgspec.structs.replace(base, kind="clicked", revenue=None))
    assert value("nudgeflow_conversions_total", **labels) == 3
    assert value("nudgeflow_conversion_revenue_total", **labels) == 120.0
    assert value("nudgeflow_experiment_conversions_total", rule="m-rule", variant="a",
                 kind="clicked") == 1  # fmt: skip
