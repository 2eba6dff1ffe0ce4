"""Experiment variant assignment: deterministic weighted hashing and a Thompson bandit.

Assignment must not change between runs, workers or restarts, so it hashes
(user, rule, experiment) with SHA-256 (never Python's randomized `hash`). Variants are
laid out on [0, 1) in sorted-name order, so reordering the YAML does not move anyone;
changing weights or adding variants does move some users (as in every hash split).

Bandit allocation and control groups: control variants (``send: false``) keep their
fixed share of traffic, chosen by the same stable hash, so a user in the holdout stays
in it and uplift against "no message" remains measurable; the bandit re-allocates only
the remaining traffic among the sending variants. A bandit that could also pick the
control would either starve it (if messages help) or drift without a baseline.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import Any


def _digest(*parts: str) -> bytes:
    # JSON-encode the parts so ("a|b", "c") and ("a", "b|c") never collide.
    return hashlib.sha256(json.dumps(parts, ensure_ascii=False).encode()).digest()


@lru_cache(maxsize=1 << 16)  # a user re-arms the same rule often; sha256 + json cost ~3 µs
def bucket(user_id: str, rule: str, experiment: str) -> float:
    """A stable uniform float in [0, 1) for this user in this experiment."""
    return int.from_bytes(_digest(user_id, rule, experiment)[:8], "big") / 2.0**64


def _pick(u: float, weights: Mapping[str, float]) -> str:
    names = sorted(name for name, weight in weights.items() if weight > 0)
    if not names:
        raise ValueError("an experiment needs at least one variant with a positive weight")
    if any(weight < 0 for weight in weights.values()):
        raise ValueError(f"variant weights must be >= 0, got {dict(weights)}")
    total = sum(weights[name] for name in names)
    point = u * total
    cumulative = 0.0
    for name in names:
        cumulative += weights[name]
        if point < cumulative:
            return name
    return names[-1]  # float rounding at the very top of the range


def assign_variant(user_id: str, rule: str, experiment: str, weights: Mapping[str, float]) -> str:
    """The user's variant, with probability proportional to its weight; deterministic."""
    return _pick(bucket(user_id, rule, experiment), weights)


def thompson_assign(
    user_id: str,
    rule: str,
    experiment: str,
    posteriors: Mapping[str, tuple[float, float]],
    *,
    seed_extra: str = "",
) -> str:
    """Thompson sampling: draw a conversion rate from each Beta(alpha, beta), pick the best.

    The RNG is seeded from the inputs, so replaying the same exposure (same posteriors,
    same `seed_extra`, e.g. the arming event id) gives the same variant.
    """
    if not posteriors:
        raise ValueError("thompson_assign needs at least one variant")
    seed = int.from_bytes(_digest("thompson", user_id, rule, experiment, seed_extra)[:16], "big")
    rng = random.Random(seed)
    best_name, best_draw = "", -1.0
    for name in sorted(posteriors):
        alpha, beta = posteriors[name]
        if alpha <= 0 or beta <= 0:
            raise ValueError(f"Beta parameters must be > 0 for {name!r}, got {(alpha, beta)}")
        draw = rng.betavariate(alpha, beta)
        if draw > best_draw:
            best_name, best_draw = name, draw
    return best_name


@dataclass(frozen=True)
class BanditPosteriors:
    """Per-variant exposures and conversions -> Beta(prior + conversions, prior + misses).

    Immutable: `with_exposure` / `with_conversion` return a new value, so the core can keep
    it in state and the shell can snapshot it for display.
    """

    exposures: Mapping[str, int] = field(default_factory=dict)
    conversions: Mapping[str, int] = field(default_factory=dict)
    prior_alpha: float = 1.0
    prior_beta: float = 1.0

    @classmethod
    def empty(cls, variants: Collection[str]) -> BanditPosteriors:
        return cls({name: 0 for name in variants}, {name: 0 for name in variants})

    def with_exposure(self, variant: str, n: int = 1) -> BanditPosteriors:
        exposures = dict(self.exposures)
        exposures[variant] = exposures.get(variant, 0) + n
        return replace(self, exposures=exposures, conversions=dict(self.conversions))

    def with_conversion(self, variant: str, n: int = 1) -> BanditPosteriors:
        conversions = dict(self.conversions)
        conversions[variant] = conversions.get(variant, 0) + n
        return replace(self, exposures=dict(self.exposures), conversions=conversions)

    def variants(self) -> list[str]:
        return sorted(set(self.exposures) | set(self.conversions))

    def posterior(self, variant: str) -> tuple[float, float]:
        exposed = max(self.exposures.get(variant, 0), 0)
        # clamp: a conversion counted before its exposure must not push beta below the prior
        converted = min(max(self.conversions.get(variant, 0), 0), exposed)
        return self.prior_alpha + converted, self.prior_beta + exposed - converted

    def posteriors(self, variants: Collection[str] | None = None) -> dict[str, tuple[float, float]]:
        names = self.variants() if variants is None else list(variants)
        return {name: self.posterior(name) for name in names}

    def probability_best(self, draws: int = 2000) -> dict[str, float]:
        """Monte Carlo P(variant has the highest rate), seeded: the same counts show the same."""
        posteriors = self.posteriors()
        if not posteriors:
            return {}
        seed_parts = [f"{n}:{a}:{b}" for n, (a, b) in sorted(posteriors.items())]
        rng = random.Random(int.from_bytes(_digest("p_best", *seed_parts)[:16], "big"))
        wins = dict.fromkeys(posteriors, 0)
        for _ in range(draws):
            samples = {name: rng.betavariate(a, b) for name, (a, b) in posteriors.items()}
            wins[max(samples, key=lambda name: samples[name])] += 1
        return {name: count / draws for name, count in wins.items()}

    def as_dict(self) -> dict[str, dict[str, Any]]:
        """For GET /experiments/<rule>: counts, Beta parameters, mean and P(best)."""
        p_best = self.probability_best()
        result: dict[str, dict[str, Any]] = {}
        for name in self.variants():
            alpha, beta = self.posterior(name)
            result[name] = {
                "exposures": self.exposures.get(name, 0),
                "conversions": self.conversions.get(name, 0),
                "alpha": alpha,
                "beta": beta,
                "mean": alpha / (alpha + beta),
                "p_best": p_best.get(name, 0.0),
            }
        return result


def allocate(
    user_id: str,
    rule: str,
    experiment: str,
    weights: Mapping[str, float],
    *,
    controls: Collection[str] = (),
    bandit: BanditPosteriors | None = None,
    seed_extra: str = "",
) -> str:
    """The variant for this exposure under either allocation mode.

    Fixed weights: `assign_variant`. Bandit: a user whose hash lands on a control stays
    there (the same holdout as under fixed weights); everyone else gets a Thompson draw
    over the sending variants.
    """
    fixed = assign_variant(user_id, rule, experiment, weights)
    if bandit is None or fixed in controls:
        return fixed
    senders = [name for name, weight in weights.items() if weight > 0 and name not in controls]
    return thompson_assign(
        user_id, rule, experiment, bandit.posteriors(senders), seed_extra=seed_extra
    )
