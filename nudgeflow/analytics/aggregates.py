"""In-memory aggregates over the audit topics: the pure core of the analytics service.

Every worker reads `<prefix>.triggers`, `.decisions`, `.deliveries`,
`.conversions` and the dead-letter topics from the beginning and folds them
here, so each has the global picture: per-rule decision counters, per-variant
experiment funnels (exposures -> sent -> delivered -> opened/clicked ->
converted), dead-letter counts and a ring buffer of recent records for the
console's live feed. Records can appear twice (a crash replays a firing and
sends the same trigger id again), so funnel steps are counted once per trigger id.
Nothing orders one topic against another: a delivery can be read before the
trigger it attributes to (a catch-up from the beginning, a bulk fetch), so it
waits in `_early` until that trigger arrives.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Hashable, Sequence
from dataclasses import asdict
from typing import Any

from nudgeflow.delivery.records import DeliveryAttempt
from nudgeflow.engine.actions import Conversion, Decision, Trigger
from nudgeflow.engine.attribution import Earned
from nudgeflow.engine.experiments import BanditPosteriors
from nudgeflow.engine.funnel import Funnel
from nudgeflow.engine.rules import Rule
from nudgeflow.engine.stats import VariantCounts, experiment_results

FEED_SIZE = 200
MEMORY = 200_000  # trigger ids remembered for de-duplication and delivery attribution
FeedItem = dict[str, Any]


class _Recent:
    """The last `size` keys seen (at least the last `size // 2`), each with a value.

    Two generations: new keys go into `_new`; a key arriving when it holds
    `size // 2` turns it into `_old`, and the previous `_old` is forgotten. A key is kept as its
    64-bit `hash()`: this is a per-process memory (dedupe and attribution), and an
    int costs ~90 bytes an entry where the trigger id string it came from would
    keep ~180 alive. Values are shared (see `Aggregates._pairs`). At 200,000
    ids, each such map stays under ~20 MB.
    """

    def __init__(self, size: int) -> None:
        self.half = max(1, size // 2)
        self._new: dict[int, Any] = {}
        self._old: dict[int, Any] = {}

    def __len__(self) -> int:
        return len(self._new) + len(self._old)

    def get(self, key: Hashable) -> Any:
        h = hash(key)
        found = self._new.get(h)
        return self._old.get(h) if found is None else found

    def add(self, key: Hashable, value: Any = True) -> bool:
        """Remember `key`; False if it was already there."""
        h = hash(key)
        if h in self._new or h in self._old:
            return False
        if len(self._new) >= self.half:
            self._old, self._new = self._new, {}
        self._new[h] = value
        return True

    def pop(self, key: Hashable) -> Any:
        """Forget `key`; returns its value (None if it was not there)."""
        h = hash(key)
        found = self._new.pop(h, None)
        return self._old.pop(h, None) if found is None else found


def trigger_item(t: Trigger) -> FeedItem:
    return {
        "kind": "trigger",
        "at": t.fired_at,
        "rule": t.rule,
        "user_id": t.user_id,
        "variant": t.variant,
        "trigger_id": t.trigger_id,
        "send": t.send,
        "late": t.late,
        "lateness_s": t.lateness_s,
    }


def decision_item(d: Decision) -> FeedItem:
    return {
        "kind": "decision",
        "at": d.at,
        "rule": d.rule,
        "user_id": d.user_id,
        "outcome": d.outcome,
        "reason": d.reason,
        "variant": d.variant,
        "deadline": d.deadline,
        "trigger_id": d.trigger_id,
    }


def outcome_key(d: Decision) -> str:
    """`suppressed:cap`, `deferred:quiet_hours`, `fired`, ... (reasons matter for those two)."""
    if d.reason and d.outcome in ("suppressed", "deferred"):
        return f"{d.outcome}:{d.reason}"
    return d.outcome


class Aggregates:
    def __init__(
        self, rules: Sequence[Rule], *, feed_size: int = FEED_SIZE, memory: int = MEMORY
    ) -> None:
        self.rules = {r.name: r for r in rules}
        self.decisions: dict[str, Counter[str]] = {}
        self.triggers: Counter[str] = Counter()
        self.sends_by_version: dict[str, Counter[int]] = {}  # rule -> rule_version -> sends
        self.variants: dict[str, dict[str, VariantCounts]] = {}
        self.dead_letters: Counter[str] = Counter()
        self.feed: deque[FeedItem] = deque(maxlen=feed_size)
        self.funnel = Funnel()  # per rule and step (engine/funnel.py), for GET /rules/<name>
        self._triggers = _Recent(memory)  # trigger id -> (rule, variant), shared pairs
        self._pairs: dict[tuple[str, str], tuple[str, str]] = {}
        self._delivered = _Recent(memory)
        self._early = _Recent(memory)  # delivered trigger ids whose trigger is not read yet
        self._engaged = _Recent(memory)  # (trigger id, kind)
        for rule in rules:
            if rule.experiment is not None:
                self.variants[rule.name] = {
                    v.name: VariantCounts() for v in rule.experiment.variants
                }

    def _counts(self, rule: str, variant: str) -> VariantCounts:
        return self.variants.setdefault(rule, {}).setdefault(variant, VariantCounts())

    # -- folding records ---------------------------------------------------------------

    def on_trigger(self, t: Trigger) -> FeedItem | None:
        """Count a trigger once per id; returns the feed item for a new one."""
        pair = (t.rule, t.variant)
        if not self._triggers.add(t.trigger_id, self._pairs.setdefault(pair, pair)):
            return None
        self.triggers[t.rule] += 1
        c = self._counts(t.rule, t.variant)
        c.exposures += 1
        if t.send:
            c.sent += 1
            self.sends_by_version.setdefault(t.rule, Counter())[t.rule_version] += 1
        if self._early.pop(t.trigger_id):
            c.delivered += 1
        item = trigger_item(t)
        self.feed.append(item)
        return item

    def on_decision(self, d: Decision) -> FeedItem:
        self.decisions.setdefault(d.rule, Counter())[outcome_key(d)] += 1
        if d.outcome != "rearmed":  # counted in metrics only, never on the audit topic
            self.funnel.add_decision(d)
        item = decision_item(d)
        self.feed.append(item)
        return item

    def on_delivery(self, a: DeliveryAttempt) -> None:
        if a.outcome != "delivered" or not self._delivered.add(a.trigger_id):
            return
        known = self._triggers.get(a.trigger_id)
        if known is None:
            self._early.add(a.trigger_id)
        else:
            self._counts(*known).delivered += 1

    def on_conversion(self, c: Conversion) -> None:
        """Counted once per (trigger id, kind), per rule, step and variant, with its revenue,
        by the funnel's `Attribution` (engine/attribution.py)."""
        if self._engaged.add((c.trigger_id, c.kind)):
            self.funnel.add_conversion(c)
            self._counts(c.rule, c.variant)  # the variant is listed even before an exposure

    def on_dead_letter(self, topic: str) -> None:
        self.dead_letters[topic] += 1

    # -- views -------------------------------------------------------------------------

    def recent(self, n: int = FEED_SIZE) -> list[FeedItem]:
        return list(self.feed)[-n:]

    def decision_counters(self) -> dict[str, dict[str, int]]:
        return {rule: dict(sorted(c.items())) for rule, c in sorted(self.decisions.items())}

    def version_sends(self) -> dict[str, dict[str, int]]:
        """Per rule, its sends (triggers with send: true, once per id) by the rules version
        that made them ("0": before live rules); the console's per-version counters."""
        return {
            rule: {str(v): n for v, n in sorted(c.items())}
            for rule, c in sorted(self.sends_by_version.items())
        }

    def variant_counts(self, rule: str) -> dict[str, VariantCounts]:
        """Per variant: exposures, sent, delivered (counted here) and what they earned."""
        earned = self.funnel.attribution.by_variant(rule)
        return {
            name: earned.get(name, Earned()).counts(c.exposures, c.sent, c.delivered)
            for name, c in self.variants.get(rule, {}).items()
        }

    def bandit(self, rule: str) -> BanditPosteriors:
        counts = self.variant_counts(rule)
        return BanditPosteriors(
            exposures={v: c.exposures for v, c in counts.items()},
            conversions={v: c.converted for v, c in counts.items()},
        )

    def experiment_rules(self) -> list[str]:
        return [name for name, r in self.rules.items() if r.experiment is not None]

    def experiment(self, rule_name: str) -> dict[str, Any] | None:
        """GET /experiments/<rule>: the funnel, rates with 95% CI, uplift, p-value."""
        rule = self.rules.get(rule_name)
        if rule is None or rule.experiment is None:
            return None
        exp = rule.experiment
        control = next((v.name for v in exp.variants if not v.send), None)
        results = experiment_results(self.variant_counts(rule_name), control)
        body: dict[str, Any] = {
            "rule": rule_name,
            "experiment": exp.name,
            "allocation": exp.allocation,
            "control": control,
            "conversion_event": rule.conversion_event,
            "variants": [asdict(r) for r in results],
        }
        if exp.allocation == "bandit":
            body["bandit"] = self.bandit(rule_name).as_dict()
        return body

    def rule_funnel(self, rule_name: str) -> dict[str, Any] | None:
        """GET /rules/<name>: per step entered, sent, suppressed and exited by reason,
        converted with revenue; what the rule's sends earned per variant (`attribution`);
        the rule's decision counters. None for a rule not configured."""
        rule = self.rules.get(rule_name)
        if rule is None:
            return None
        return {
            **self._steps(rule),
            "decisions": dict(sorted(self.decisions.get(rule_name, Counter()).items())),
        }

    def funnels(self) -> list[dict[str, Any]]:
        """The console's funnels: every configured rule's steps, as GET /rules/<name> has them."""
        return [self._steps(rule) for rule in self.rules.values()]

    def _steps(self, rule: Rule) -> dict[str, Any]:
        return {
            "rule": rule.name,
            "journey": rule.flow,
            "steps": self.funnel.rule(rule.name, rule.program),
            "attribution": self.funnel.attribution.view(
                rule.name, rule.conversion_event, rule.conversion_within_ms
            ),
        }

    def experiments(self) -> list[dict[str, Any]]:
        return [e for name in self.experiment_rules() if (e := self.experiment(name)) is not None]
