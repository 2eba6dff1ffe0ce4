"""Tally what a backtest decided and turn it into a summary (text or JSON).

The tally only reads the records the engine returns (Trigger, Decision,
Conversion), the same records the live audit trail holds, so "what would
this config have done last week" is answered in the live vocabulary.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec

from nudgeflow.engine.actions import Action, Conversion, Decision, Trigger
from nudgeflow.engine.attribution import Attribution, Earned
from nudgeflow.engine.funnel import Funnel
from nudgeflow.engine.stats import VariantCounts, experiment_results

# Decision outcomes counted per rule. "fired" is counted from Trigger records,
# which are what a backtest writes out, so one firing is never counted twice.
RULE_OUTCOMES = ("armed", "rearmed", "cancelled", "condition_false", "deferred")


@dataclass(slots=True)
class RuleTally:
    outcomes: Counter[str] = field(default_factory=Counter)
    suppressed: Counter[str] = field(default_factory=Counter)
    not_entered: Counter[str] = field(default_factory=Counter)  # by reason (journeys)
    fired: int = 0
    sent: int = 0

    def as_dict(self, earned: Earned | None = None) -> dict[str, Any]:
        """The rule's figures; `earned`: what its sends earned (engine/attribution.py)."""
        out: dict[str, Any] = {name: self.outcomes[name] for name in RULE_OUTCOMES}
        out["fired"] = self.fired
        out["sent"] = self.sent
        out.update((earned or Earned()).as_dict())  # converted, revenue, opened, clicked
        out["suppressed"] = dict(sorted(self.suppressed.items()))
        out["suppressed_total"] = sum(self.suppressed.values())
        out["not_entered"] = dict(sorted(self.not_entered.items()))
        out["already_active"] = self.outcomes["already_active"]
        return out


@dataclass(slots=True)
class VariantTally:
    exposures: int = 0
    sent: int = 0

    def counts(self, earned: Earned) -> VariantCounts:
        # A backtest has no webhooks: every send is taken as delivered.
        return earned.counts(self.exposures, self.sent, self.sent)


class Tally:
    """Counts per rule and per (rule, variant); feed it every step's actions."""

    def __init__(
        self,
        funnel_rules: Collection[str] | None = None,
        exposure_steps: Mapping[str, int | str] | None = None,
    ) -> None:
        self.rules: dict[str, RuleTally] = {}
        self.variants: dict[tuple[str, str], VariantTally] = {}
        self.triggers = 0
        self.attribution = Attribution()  # conversions and revenue per rule, step, variant
        self.funnel = Funnel()  # per rule and step (engine/funnel.py) ...
        # ... of these rules (None: all); a one-step rule's funnel is its row above
        self.funnel_rules = None if funnel_rules is None else frozenset(funnel_rules)
        # a run is one exposure: counted at its first send step (0 unless said here)
        self.exposure_steps = dict(exposure_steps or {})

    def _rule(self, name: str) -> RuleTally:
        tally = self.rules.get(name)
        if tally is None:
            tally = self.rules[name] = RuleTally()
        return tally

    def rule(self, name: str) -> dict[str, Any]:
        """One rule's row of the summary, with what its sends earned."""
        return self.rules.get(name, RuleTally()).as_dict(self.attribution.total(name))

    def _variant(self, rule: str, variant: str) -> VariantTally:
        key = (rule, variant)
        tally = self.variants.get(key)
        if tally is None:
            tally = self.variants[key] = VariantTally()
        return tally

    def merge_counts(self, other: Tally) -> None:
        """Add another partition's counts of triggers and decisions (`--workers`).

        Not its conversions: revenue is a float sum, so the caller adds those records
        itself in the one-process order (backtest/parallel.py).
        """
        self.triggers += other.triggers
        for name, theirs in other.rules.items():
            mine = self._rule(name)
            mine.outcomes.update(theirs.outcomes)
            mine.suppressed.update(theirs.suppressed)
            mine.not_entered.update(theirs.not_entered)
            mine.fired += theirs.fired
            mine.sent += theirs.sent
        for (rule, variant), counts in other.variants.items():
            tally = self._variant(rule, variant)
            tally.exposures += counts.exposures
            tally.sent += counts.sent
        raw = self.funnel.raw
        for key, n in other.funnel.raw.items():
            raw[key] = raw.get(key, 0) + n

    def add(self, actions: Iterable[Action]) -> None:
        rules = self.rules
        funnel = self.funnel
        counted = self.funnel_rules
        for action in actions:
            if isinstance(action, Decision):  # most actions are decisions: test them first
                outcome = action.outcome
                if outcome != "rearmed" and (counted is None or action.rule in counted):
                    funnel.add_decision(action)  # (rearmed, the commonest, counts for none)
                if outcome == "fired":
                    continue
                rule = rules.get(action.rule) or self._rule(action.rule)
                if outcome == "suppressed":
                    rule.suppressed[action.reason or "unknown"] += 1
                elif outcome == "render_failed":  # over its budget: reason is the limit
                    rule.suppressed[f"render_failed ({action.reason})"] += 1
                elif outcome == "not_entered":
                    rule.not_entered[action.reason or "unknown"] += 1
                else:
                    rule.outcomes[outcome] += 1
            elif isinstance(action, Trigger):
                self.triggers += 1
                rule = self._rule(action.rule)
                rule.fired += 1
                variant = self._variant(action.rule, action.variant)
                if action.step == self.exposure_steps.get(action.rule, 0):  # one per run
                    variant.exposures += 1
                if action.send:
                    rule.sent += 1
                    variant.sent += 1
            elif isinstance(action, Conversion):
                if counted is None or action.rule in counted:
                    funnel.add_conversion(action)
                self.attribution.add(action)


def experiment_summary(
    tally: Tally, experiments: Mapping[str, tuple[Sequence[str], str | None]]
) -> dict[str, Any]:
    """Per experiment rule: variant results (rate, 95% CI, uplift, p-value).

    `experiments` maps a rule name to (its variant names, its control variant).
    """
    out: dict[str, Any] = {}
    for rule, (names, control) in experiments.items():
        earned = tally.attribution.by_variant(rule)
        counts = {
            name: tally.variants.get((rule, name), VariantTally()).counts(
                earned.get(name, Earned())
            )
            for name in names
        }
        results = experiment_results(counts, control)
        out[rule] = {"control": control, "variants": msgspec.to_builtins(results)}
    return out


def render_text(summary: Mapping[str, Any]) -> str:
    """A human-readable summary: run figures, per-rule table, per-variant table."""
    lines = [
        f"events read      {summary['events_read']:>12,}   "
        f"rejected {summary['rejected']:,}   duplicates {summary['duplicates']:,}   "
        f"out of order {summary['out_of_order']:,}",
        f"users            {summary['users']:>12,}   "
        f"timers pending at end {summary['timers_pending']:,}",
        f"span             {summary['first_event']} .. {summary['last_event']}   "
        f"until {summary['until']}",
        f"elapsed          {summary['elapsed_s']:>12.2f} s   "
        f"{summary['events_per_s']:,.0f} events/s   "
        f"({summary['events_per_cpu_s']:,.0f} per CPU second)   "
        f"peak RSS {summary['peak_rss_mb']:.0f} MB",
        f"triggers         {summary['triggers']:>12,}",
    ]
    for reason, count in summary["rejected_by_reason"].items():
        lines.append(f"  rejected {reason}: {count:,}")
    for sample in summary["rejected_samples"]:
        where = f" ({sample['field']})" if sample.get("field") else ""
        lines.append(f"    line {sample['line']}: {sample['reason']}{where}: {sample['error']}")
    if summary.get("stuck_timers"):
        lines.append(f"  WARNING: {summary['stuck_timers']} timers did not advance (skipped)")
    header = (
        *("rule", "armed", "rearmed", "fired", "sent", "cancelled", "cond_false", "deferred"),
        *("converted", "revenue"),
    )
    lines += ["", f"{header[0]:<24}" + "".join(f"{h:>11}" for h in header[1:])]
    lines.append("-" * (24 + 11 * (len(header) - 1)) + "  suppressed")
    for name, rule in summary["rules"].items():
        figures = (
            rule["armed"],
            rule["rearmed"],
            rule["fired"],
            rule["sent"],
            rule["cancelled"],
            rule["condition_false"],
            rule["deferred"],
            rule.get("converted", 0),
        )
        suppressed = ", ".join(f"{k} {v:,}" for k, v in rule["suppressed"].items()) or "-"
        revenue = f"{rule.get('revenue', 0):>11,.2f}"
        lines.append(
            f"{name:<24}" + "".join(f"{f:>11,}" for f in figures) + revenue + f"  {suppressed}"
        )
    for rule_name, steps in summary.get("funnel", {}).items():
        if len(steps) > 1:
            lines += ["", *funnel_lines(rule_name, steps, summary["rules"].get(rule_name, {}))]
    for rule_name, experiment in summary["experiments"].items():
        lines += ["", f"experiment {rule_name} (control: {experiment['control'] or '-'})"]
        lines.append(
            f"  {'variant':<14}{'exposures':>10}{'sent':>9}{'opened':>8}{'converted':>10}"
            f"{'rate':>9}{'95% CI':>18}{'uplift':>10}{'relative':>10}{'p-value':>9}"
            f"{'revenue':>12}"
        )
        for v in experiment["variants"]:
            lines.append(_variant_line(v))
    return "\n".join(lines)


def funnel_lines(
    rule: str, steps: Sequence[Mapping[str, Any]], totals: Mapping[str, Any]
) -> list[str]:
    """One rule's per-step funnel as a table (suppressed and exited by reason)."""
    refused = ", ".join(f"{k} {v:,}" for k, v in totals.get("not_entered", {}).items()) or "0"
    lines = [
        f"funnel {rule}   (not entered: {refused}; already active: "
        f"{totals.get('already_active', 0):,})",
        f"  {'step':<16}{'kind':<8}{'entered':>9}{'sent':>8}{'suppr.':>8}{'exited':>8}"
        f"{'conv.':>7}  reasons",
    ]
    for s in steps:
        reasons = [f"suppressed {k} {v:,}" for k, v in s["suppressed"].items()]
        reasons += [f"exited {k} {v:,}" for k, v in s["exited"].items()]
        lines.append(
            f"  {s['step']!s:<16}{s['kind']:<8}{s['entered']:>9,}{s['sent']:>8,}"
            f"{sum(s['suppressed'].values()):>8,}{sum(s['exited'].values()):>8,}"
            f"{s['converted']:>7,}  {', '.join(reasons) or '-'}"
        )
    return lines


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}%"


def _variant_line(v: Mapping[str, Any]) -> str:
    low, high = v.get("ci_low"), v.get("ci_high")
    ci = "-" if low is None or high is None else f"{_pct(low)}..{_pct(high)}"
    p = v.get("p_value")
    uplift = v.get("uplift_abs")
    points = "-" if uplift is None else f"{100 * uplift:+.2f}pp"
    relative = v.get("uplift_rel")
    name = str(v["variant"]) + (" *" if v.get("is_control") else "")
    return (
        f"  {name:<14}{v['exposures']:>10,}{v['sent']:>9,}{v['opened']:>8,}"
        f"{v['converted']:>10,}{_pct(v.get('conversion_rate')):>9}{ci:>18}{points:>10}"
        f"{'-' if relative is None else f'{100 * relative:+.1f}%':>10}"
        f"{'-' if p is None else f'{p:.4f}':>9}{v.get('revenue', 0):>12,.2f}"
    )
