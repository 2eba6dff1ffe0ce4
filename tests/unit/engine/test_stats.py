"""Experiment statistics against answers computed by hand."""

from __future__ import annotations

import math

import pytest

from nudgeflow.engine.stats import (
    VariantCounts,
    experiment_results,
    two_proportion_p_value,
    wilson_interval,
)


def test_uplift_and_p_value_for_10_vs_12_percent() -> None:
    counts = {
        "control": VariantCounts(exposures=1000, converted=100),
        "message": VariantCounts(
            exposures=1000, sent=1000, delivered=990, opened=400, clicked=99, converted=120
        ),
    }
    control, message = experiment_results(counts, control="control")

    # by hand: pooled p = 220/2000 = 0.11; se = sqrt(0.11 * 0.89 * (1/1000 + 1/1000))
    se = math.sqrt(0.11 * 0.89 * 0.002)  # 0.013993
    z = (0.12 - 0.10) / se  # 1.4293
    p = 2 * (1 - 0.5 * (1 + math.erf(z / math.sqrt(2))))  # 2 * (1 - Phi(z))
    assert z == pytest.approx(1.4293, abs=1e-4)
    assert p == pytest.approx(0.1529, abs=1e-4)

    assert message.variant == "message" and not message.is_control
    assert message.conversion_rate == pytest.approx(0.12)
    assert message.uplift_abs == pytest.approx(0.02)
    assert message.uplift_rel == pytest.approx(0.20)
    assert message.p_value == pytest.approx(p, rel=1e-9)
    assert message.open_rate == pytest.approx(400 / 990)
    assert message.click_rate == pytest.approx(0.1)
    assert (message.sent, message.delivered, message.opened, message.clicked) == (
        1000, 990, 400, 99,
    )  # fmt: skip

    assert control.is_control
    assert control.conversion_rate == pytest.approx(0.10)
    assert control.uplift_abs is None and control.uplift_rel is None and control.p_value is None
    assert control.open_rate is None  # nothing delivered to a holdout


def test_clear_difference_is_significant() -> None:
    # 200/1000 vs 250/1000: pooled 0.225, se = sqrt(.225*.775*.002) = 0.018675, z = 2.6774
    p = two_proportion_p_value(250, 1000, 200, 1000)
    assert p == pytest.approx(math.erfc(0.05 / math.sqrt(0.225 * 0.775 * 0.002) / math.sqrt(2)))
    assert p == pytest.approx(0.00742, abs=1e-5)
    assert two_proportion_p_value(200, 1000, 250, 1000) == pytest.approx(p)  # two-sided


def test_wilson_interval_known_values() -> None:
    # 100/1000: centre (0.1 + z²/2000)/(1 + z²/1000), half-width z*sqrt(.09/1000 + z²/4e6)/(...)
    low, high = wilson_interval(100, 1000)  # type: ignore[misc]
    assert (low, high) == (pytest.approx(0.08291, abs=1e-5), pytest.approx(0.12015, abs=1e-5))
    # the Wilson interval stays inside [0, 1] and is not degenerate at 0% or 100%
    assert wilson_interval(0, 10) == (0.0, pytest.approx(0.27753, abs=1e-5))
    assert wilson_interval(10, 10) == (pytest.approx(0.72247, abs=1e-5), 1.0)
    assert wilson_interval(0, 0) is None


def test_results_without_data_or_control() -> None:
    counts = {"a": VariantCounts(exposures=0), "b": VariantCounts(exposures=10, converted=0)}
    a, b = experiment_results(counts, control=None)
    assert a.conversion_rate is None and a.ci_low is None and a.p_value is None
    assert b.conversion_rate == 0.0 and b.uplift_abs is None and b.p_value is None
    # zero-rate control: absolute uplift defined, relative not; identical rates give p = 1
    _, c = experiment_results(
        {"ctl": VariantCounts(exposures=10), "c": VariantCounts(exposures=10, converted=2)},
        control="ctl",
    )
    assert c.uplift_abs == pytest.approx(0.2) and c.uplift_rel is None
    assert two_proportion_p_value(0, 10, 0, 10) == 1.0
    assert two_proportion_p_value(3, 10, 0, 0) is None


def test_results_keep_variant_order_and_unknown_control_gives_no_uplift() -> None:
    counts = {name: VariantCounts(exposures=10, converted=1) for name in ("z", "a", "m")}
    assert [r.variant for r in experiment_results(counts, control="a")] == ["z", "a", "m"]
    assert all(r.p_value is None for r in experiment_results(counts, control="missing"))
