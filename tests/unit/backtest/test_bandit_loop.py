"""A bandit experiment, closed loop through the real engine (issue 5).

The backtest replays a fixed file, but a bandit's traffic depends on how earlier
users converted; so this test plays the shop: each simulated user arms the rule,
gets the variant the engine allocates, and converts with that variant's true
rate (10% vs 12% vs a much better 30%), reported back as a `purchase` event.
"""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

from nudgeflow.config.build import build_engine
from nudgeflow.config.loader import load_config_text
from nudgeflow.engine.actions import Conversion, Trigger
from nudgeflow.events.model import Event

RATES = {"a": 0.10, "b": 0.12, "c": 0.30}

CONFIG = """
rules:
  - name: offer
    trigger: visit
    experiment:
      allocation: bandit
      variants: {a: {weight: 34}, b: {weight: 33}, c: {weight: 33}}
      conversion: {event: purchase, within: 1h}
"""


def _simulate(allocation: str, users: int = 3000, seed: int = 7) -> tuple[Counter, Counter, int]:
    """Variants seen by the first and the last fifth of users, and conversions attributed."""
    text = CONFIG.replace("allocation: bandit", f"allocation: {allocation}")
    engine = build_engine(load_config_text(text, base_dir=Path(".")), secret=b"s")
    rng = random.Random(seed)
    first, last = Counter(), Counter()
    conversions = 0
    t0 = 1_760_000_000_000
    for i in range(users):
        ts = t0 + i * 1000
        step = engine.apply(None, Event(user_id=f"u{i}", type="visit", ts=ts, event_id=f"v{i}"), ts)
        [trigger] = [a for a in step.actions if isinstance(a, Trigger)]
        if i < users // 5:
            first[trigger.variant] += 1
        elif i >= users * 4 // 5:
            last[trigger.variant] += 1
        if rng.random() < RATES[trigger.variant]:
            buy = Event(user_id=f"u{i}", type="purchase", ts=ts + 10, event_id=f"p{i}")
            after = engine.apply(step.state, buy, ts + 10)
            conversions += sum(isinstance(a, Conversion) for a in after.actions)
    return first, last, conversions


def test_bandit_moves_most_traffic_to_the_best_variant() -> None:
    first, last, conversions = _simulate("bandit")
    share_c = last["c"] / sum(last.values())
    assert share_c > 0.6, (first, last)  # the last fifth of users mostly see the best variant
    assert first["c"] / sum(first.values()) < share_c  # it learned; it did not start there
    assert conversions > 0


def test_weights_keep_the_split_whatever_converts() -> None:
    _first, last, _ = _simulate("weights")
    share_c = last["c"] / sum(last.values())
    assert 0.25 < share_c < 0.42, last
