"""Per-variant experiment results: rates, Wilson intervals, uplift, two-proportion z-test.

Conversion rate is conversions per exposure (control exposures included: a control
"exposure" is the message that would have been sent), so variants compare against the
holdout on the same footing. Only `math` is used: the normal tail is `erfc`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

Z_95 = 1.959963984540054  # standard normal quantile for a two-sided 95% interval


@dataclass
class VariantCounts:
    exposures: int = 0
    sent: int = 0
    delivered: int = 0
    opened: int = 0
    clicked: int = 0
    converted: int = 0
    revenue: float = 0.0  # summed over the conversions (engine/attribution.py)


@dataclass
class VariantResult:
    variant: str
    is_control: bool
    exposures: int
    sent: int
    delivered: int
    opened: int
    clicked: int
    converted: int
    revenue: float  # from the conversions' revenue / total / value
    revenue_per_exposure: float | None
    conversion_rate: float | None  # converted / exposures
    ci_low: float | None  # 95% Wilson score interval of the conversion rate
    ci_high: float | None
    open_rate: float | None  # opened / delivered
    click_rate: float | None  # clicked / delivered
    uplift_abs: float | None  # rate - control rate (percentage points as a fraction)
    uplift_rel: float | None  # (rate - control rate) / control rate
    p_value: float | None  # pooled two-proportion z-test against control, two-sided


def _ratio(numerator: int, denominator: int) -> float | None:
    return numerator / denominator if denominator > 0 else None


def wilson_interval(successes: int, trials: int, z: float = Z_95) -> tuple[float, float] | None:
    """Wilson score interval: sane at 0% and 100% and for small samples, unlike p ± z·se."""
    if trials <= 0:
        return None
    p = successes / trials
    z2 = z * z
    denominator = 1 + z2 / trials
    centre = (p + z2 / (2 * trials)) / denominator
    half = z * math.sqrt(p * (1 - p) / trials + z2 / (4 * trials * trials)) / denominator
    # exact at the edges (the formula gives 0 and 1 there, up to float rounding)
    low = 0.0 if successes <= 0 else max(0.0, centre - half)
    high = 1.0 if successes >= trials else min(1.0, centre + half)
    return low, high


def two_proportion_p_value(x1: int, n1: int, x2: int, n2: int) -> float | None:
    """Two-sided p-value of H0: p1 == p2, pooled standard error."""
    if n1 <= 0 or n2 <= 0:
        return None
    pooled = (x1 + x2) / (n1 + n2)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    diff = x1 / n1 - x2 / n2
    if se == 0:
        return 1.0 if diff == 0 else 0.0
    z = diff / se
    return math.erfc(abs(z) / math.sqrt(2))


def experiment_results(
    counts: Mapping[str, VariantCounts], control: str | None
) -> list[VariantResult]:
    """One result per variant, in the order given; uplift and p-value need a control."""
    base = counts.get(control) if control is not None else None
    base_rate = _ratio(base.converted, base.exposures) if base is not None else None
    results: list[VariantResult] = []
    for name, c in counts.items():
        rate = _ratio(c.converted, c.exposures)
        interval = wilson_interval(c.converted, c.exposures)
        is_control = name == control
        uplift_abs = uplift_rel = p_value = None
        if base is not None and not is_control and rate is not None and base_rate is not None:
            uplift_abs = rate - base_rate
            uplift_rel = uplift_abs / base_rate if base_rate > 0 else None
            p_value = two_proportion_p_value(
                c.converted, c.exposures, base.converted, base.exposures
            )
        results.append(
            VariantResult(
                variant=name,
                is_control=is_control,
                exposures=c.exposures,
                sent=c.sent,
                delivered=c.delivered,
                opened=c.opened,
                clicked=c.clicked,
                converted=c.converted,
                revenue=round(c.revenue, 2),
                revenue_per_exposure=(
                    round(c.revenue / c.exposures, 4) if c.exposures > 0 else None
                ),
                conversion_rate=rate,
                ci_low=interval[0] if interval else None,
                ci_high=interval[1] if interval else None,
                open_rate=_ratio(c.opened, c.delivered),
                click_rate=_ratio(c.clicked, c.delivered),
                uplift_abs=uplift_abs,
                uplift_rel=uplift_rel,
                p_value=p_value,
            )
        )
    return results
