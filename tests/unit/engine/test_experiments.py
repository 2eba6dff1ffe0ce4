"""Variant assignment: weighted hash split, stability across processes, Thompson bandit."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from collections import Counter

import pytest

from nudgeflow.engine.experiments import (
    BanditPosteriors,
    allocate,
    assign_variant,
    thompson_assign,
)

WEIGHTS = {"fast": 45.0, "standard": 45.0, "control": 10.0}


def test_shares_over_100k_users_are_within_one_point_of_the_weights() -> None:
    n = 100_000
    counts = Counter(
        assign_variant(f"user-{i}", "abandoned_cart", "timing", WEIGHTS) for i in range(n)
    )
    total = sum(WEIGHTS.values())
    for name, weight in WEIGHTS.items():
        assert abs(counts[name] / n - weight / total) < 0.01, (name, counts)


def test_same_user_always_gets_the_same_variant_regardless_of_declaration_order() -> None:
    reordered = {"control": 10.0, "standard": 45.0, "fast": 45.0}
    for i in range(2_000):
        first = assign_variant(f"u{i}", "abandoned_cart", "timing", WEIGHTS)
        assert assign_variant(f"u{i}", "abandoned_cart", "timing", WEIGHTS) == first
        assert assign_variant(f"u{i}", "abandoned_cart", "timing", reordered) == first


_CHILD = """
import json, sys
from nudgeflow.engine.experiments import assign_variant, thompson_assign
weights = json.loads(sys.argv[1])
print(json.dumps({
    "fixed": [assign_variant(f"u{i}", "cart", "timing", weights) for i in range(500)],
    "bandit": [thompson_assign(f"u{i}", "cart", "timing", {"a": (3.0, 9.0), "b": (4.0, 8.0)})
               for i in range(500)],
}))
"""


@pytest.mark.parametrize("hash_seed", ["0", "4242"])
def test_assignment_is_stable_across_processes_and_hash_seeds(hash_seed: str) -> None:
    env = {**os.environ, "PYTHONHASHSEED": hash_seed}
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, json.dumps(WEIGHTS)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    child = json.loads(out.stdout)
    assert child["fixed"] == [
        assign_variant(f"u{i}", "cart", "timing", WEIGHTS) for i in range(500)
    ]
    here = [
        thompson_assign(f"u{i}", "cart", "timing", {"a": (3.0, 9.0), "b": (4.0, 8.0)})
        for i in range(500)
    ]
    assert child["bandit"] == here
    assert len(set(child["fixed"])) == 3  # a real split, not one constant answer


def test_rule_and_experiment_names_give_independent_splits() -> None:
    half = {"a": 1.0, "b": 1.0}
    users = [f"u{i}" for i in range(10_000)]
    one = [assign_variant(u, "cart", "exp1", half) for u in users]
    other_exp = [assign_variant(u, "cart", "exp2", half) for u in users]
    other_rule = [assign_variant(u, "browse", "exp1", half) for u in users]
    for other in (other_exp, other_rule):
        agreement = sum(x == y for x, y in zip(one, other, strict=True)) / len(users)
        assert 0.47 < agreement < 0.53  # ~50%: uncorrelated


def test_zero_weight_is_never_chosen_and_bad_weights_are_rejected() -> None:
    weights = {"a": 1.0, "off": 0.0}
    assert {assign_variant(f"u{i}", "r", "e", weights) for i in range(1_000)} == {"a"}
    with pytest.raises(ValueError):
        assign_variant("u", "r", "e", {"a": 0.0})
    with pytest.raises(ValueError):
        assign_variant("u", "r", "e", {"a": 1.0, "b": -1.0})
    with pytest.raises(ValueError):
        assign_variant("u", "r", "e", {})


# --- bandit -------------------------------------------------------------------------------


def test_thompson_sends_most_users_to_the_clearly_better_variant() -> None:
    # A: 10 conversions / 100, B: 30 / 100 (Beta(1+x, 1+n-x))
    posteriors = {"A": (11.0, 91.0), "B": (31.0, 71.0)}
    picks = Counter(thompson_assign(f"u{i}", "cart", "e", posteriors) for i in range(2_000))
    assert picks["B"] / 2_000 > 0.95


def test_thompson_with_equal_posteriors_splits_evenly_and_is_deterministic() -> None:
    posteriors = {"A": (5.0, 50.0), "B": (5.0, 50.0)}
    picks = [thompson_assign(f"u{i}", "cart", "e", posteriors) for i in range(4_000)]
    assert 0.46 < picks.count("A") / 4_000 < 0.54
    assert picks == [thompson_assign(f"u{i}", "cart", "e", posteriors) for i in range(4_000)]
    # seed_extra (e.g. the arming event id) gives a fresh draw per exposure
    redrawn = [
        thompson_assign(f"u{i}", "cart", "e", posteriors, seed_extra="evt-2") for i in range(4_000)
    ]
    assert redrawn != picks


def test_thompson_rejects_bad_parameters() -> None:
    with pytest.raises(ValueError):
        thompson_assign("u", "r", "e", {})
    with pytest.raises(ValueError):
        thompson_assign("u", "r", "e", {"a": (0.0, 1.0)})


def test_posteriors_are_immutable_and_count_exposures_and_conversions() -> None:
    empty = BanditPosteriors.empty(["A", "B"])
    updated = empty.with_exposure("A", 10).with_conversion("A", 3).with_exposure("B")
    assert empty.posterior("A") == (1.0, 1.0)
    assert updated.posterior("A") == (4.0, 8.0)
    assert updated.posterior("B") == (1.0, 2.0)
    # a conversion recorded before its exposure never drives beta below the prior
    assert BanditPosteriors().with_conversion("C").posterior("C") == (1.0, 1.0)
    shown = updated.as_dict()
    assert shown["A"] == {
        "exposures": 10,
        "conversions": 3,
        "alpha": 4.0,
        "beta": 8.0,
        "mean": pytest.approx(4 / 12),
        "p_best": pytest.approx(shown["A"]["p_best"]),
    }
    assert sum(v["p_best"] for v in shown.values()) == pytest.approx(1.0)


def test_probability_best_favours_the_better_variant() -> None:
    posteriors = BanditPosteriors({"A": 1_000, "B": 1_000}, {"A": 100, "B": 150})
    p_best = posteriors.probability_best()
    assert p_best["B"] > 0.99
    assert posteriors.probability_best() == p_best  # seeded: the display is stable


def test_bandit_loop_shifts_traffic_to_the_better_variant() -> None:
    true_rate = {"A": 0.05, "B": 0.10}
    world = random.Random(7)
    posteriors = BanditPosteriors.empty(["A", "B"])
    picks: list[str] = []
    for i in range(4_000):
        variant = thompson_assign(f"u{i}", "cart", "e", posteriors.posteriors())
        picks.append(variant)
        posteriors = posteriors.with_exposure(variant)
        if world.random() < true_rate[variant]:
            posteriors = posteriors.with_conversion(variant)
    late = picks[2_000:]
    assert late.count("B") / len(late) > 0.7


def test_allocate_keeps_the_control_share_fixed_under_bandit() -> None:
    weights = {"A": 45.0, "B": 45.0, "control": 10.0}
    bandit = BanditPosteriors({"A": 500, "B": 500}, {"A": 20, "B": 80})
    n = 20_000
    picks = [
        allocate(f"u{i}", "cart", "e", weights, controls={"control"}, bandit=bandit)
        for i in range(n)
    ]
    counts = Counter(picks)
    assert abs(counts["control"] / n - 0.10) < 0.01
    assert counts["B"] > 0.85 * (n - counts["control"])
    # holdout membership is the stable hash, the same as under fixed weights
    for i in range(n):
        fixed = assign_variant(f"u{i}", "cart", "e", weights)
        assert (picks[i] == "control") == (fixed == "control")


def test_allocate_without_bandit_is_the_hash_split() -> None:
    for i in range(500):
        assert allocate(f"u{i}", "cart", "e", WEIGHTS, controls={"control"}) == assign_variant(
            f"u{i}", "cart", "e", WEIGHTS
        )
