"""What-if: one event history under two configurations, and what the change would do.

`nudgeflow backtest --config NEW --compare OLD --events FILE` (issue 20.4, DESIGN §3.3).
The file is read and parsed once; each event is fed to two `Backtest` runners (the
same pure engine core as a single backtest, each with its own states, timers and
clock), so both see exactly the same history. Each run is tallied as a single backtest
is (report.Tally: sends, suppressions by reason, conversions and revenue per rule), and
every user's outcome is kept as a small multiset per rule (sent, control, suppressed
<reason>, converted, revenue), so the users whose outcome changed can be named.

A rule is `added` (only in NEW), `removed` (only in OLD), `changed` (its definition
differs) or `same`; a `same` rule's figures can still move, through the shared cap.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from nudgeflow.backtest.file import first_sends, funnel_rules, iso, peak_rss_mb
from nudgeflow.backtest.reader import ReadStats, read_events
from nudgeflow.backtest.report import Tally
from nudgeflow.backtest.runner import Backtest
from nudgeflow.engine.actions import Action, Conversion, Decision, Trigger
from nudgeflow.engine.core import Engine

CHANGED_USERS_SHOWN = 20
# figures compared per rule (numbers; `suppressed` by reason is compared separately)
FIGURES = ("fired", "sent", "suppressed_total", "converted", "revenue", "cancelled")

Outcome = dict[tuple[str, str], float]  # (rule, what) -> count (revenue: the amount)


class UserOutcomes:
    """Per user, what each rule did to them: sent, control, suppressed <reason>,
    converted and revenue. Only users something happened to are kept."""

    __slots__ = ("users",)

    def __init__(self) -> None:
        self.users: dict[str, Outcome] = {}

    def _of(self, user_id: str) -> Outcome:
        outcome = self.users.get(user_id)
        if outcome is None:
            outcome = self.users[user_id] = {}
        return outcome

    def count(self, user_id: str, rule: str, what: str, amount: float = 1) -> None:
        outcome = self._of(user_id)
        key = (rule, what)
        outcome[key] = outcome.get(key, 0) + amount

    def add(self, actions: Iterable[Action]) -> None:
        for action in actions:
            if isinstance(action, Decision):
                outcome = action.outcome
                if outcome == "suppressed":
                    what = f"suppressed {action.reason or 'unknown'}"
                elif outcome == "render_failed":
                    what = f"suppressed render_failed ({action.reason})"
                else:
                    continue
                self.count(action.user_id, action.rule, what)
            elif isinstance(action, Trigger):
                self.count(action.user_id, action.rule, "sent" if action.send else "control")
            elif isinstance(action, Conversion) and action.kind == "conversion":
                self.count(action.user_id, action.rule, "converted")
                if action.revenue:
                    self.count(action.user_id, action.rule, "revenue", action.revenue)


class Side:
    """One configuration's run over the shared history."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.tally = Tally(funnel_rules(engine), first_sends(engine))
        self.outcomes = UserOutcomes()
        self.backtest = Backtest(engine, self.sink)

    def sink(self, actions: Sequence[Action]) -> None:
        self.tally.add(actions)
        self.outcomes.add(actions)

    def rule(self, name: str) -> dict[str, Any] | None:
        """The rule's row as in a single backtest; None when this config lacks the rule."""
        if name not in self.engine.rules:
            return None
        return self.tally.rule(name)


def compare_file(
    new: Engine,
    old: Engine,
    events: Path,
    *,
    until_ms: int | None = None,
    labels: tuple[str, str] = ("new", "old"),
) -> dict[str, Any]:
    """Run `events` under both engines; return the comparison (the `--json` object)."""
    read = ReadStats()
    sides = Side(new), Side(old)
    feed_new, feed_old = sides[0].backtest.feed, sides[1].backtest.feed
    started, cpu_started = time.perf_counter(), time.process_time()
    for event in read_events(events, read):  # parsed once, fed to both
        feed_old(event)
        feed_new(event)
    for side in sides:
        side.backtest.finish(until_ms)
    elapsed = time.perf_counter() - started
    cpu = time.process_time() - cpu_started
    stats = sides[1].backtest.stats
    changed, shown = changed_users(sides[1], sides[0])
    return {
        "events_file": str(events),
        "new": labels[0],
        "old": labels[1],
        "events_read": read.events,
        "rejected": read.rejected_total,
        "rejected_by_reason": dict(read.rejected.most_common()),
        "users": sides[1].backtest.users,
        "first_event": iso(stats.first_ts),
        "last_event": iso(stats.last_ts),
        "until": iso(stats.until),
        "triggers": {"new": sides[0].tally.triggers, "old": sides[1].tally.triggers},
        "elapsed_s": round(elapsed, 3),
        "cpu_s": round(cpu, 3),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "rules": rule_rows(sides[0], sides[1]),
        "users_changed": changed,
        "changed_users": shown,
    }


def rule_status(name: str, new: Engine, old: Engine) -> str:
    if name not in old.rules:
        return "added"
    if name not in new.rules:
        return "removed"
    return "same" if new.rules[name] == old.rules[name] else "changed"


def rule_rows(new: Side, old: Side) -> dict[str, Any]:
    """Per rule (OLD's order, then rules only NEW has): status, both rows, differences."""
    names = dict.fromkeys([*old.engine.rules, *new.engine.rules, *old.tally.rules])
    names.update(dict.fromkeys(new.tally.rules))
    out: dict[str, Any] = {}
    for name in names:
        before, after = old.rule(name), new.rule(name)
        out[name] = {
            "status": rule_status(name, new.engine, old.engine),
            "old": before,
            "new": after,
            "diff": difference(before, after),
        }
    return out


def difference(before: Mapping[str, Any] | None, after: Mapping[str, Any] | None) -> dict[str, Any]:
    """NEW minus OLD per figure and per suppression reason (a missing rule counts 0)."""
    old, new = before or {}, after or {}
    out: dict[str, Any] = {}
    for figure in FIGURES:
        delta = new.get(figure, 0) - old.get(figure, 0)
        out[figure] = round(delta, 2) if figure == "revenue" else delta
    reasons = dict.fromkeys([*old.get("suppressed", {}), *new.get("suppressed", {})])
    out["suppressed"] = {
        reason: new.get("suppressed", {}).get(reason, 0) - old.get("suppressed", {}).get(reason, 0)
        for reason in sorted(reasons)
    }
    return out


def changed_users(old: Side, new: Side) -> tuple[int, list[dict[str, Any]]]:
    """How many users' outcome differs, and the first few (in order of first event):
    per user, for each rule whose outcome differs, what OLD and NEW did ({} = nothing)."""
    before, after = old.outcomes.users, new.outcomes.users
    empty: Outcome = {}
    count = 0
    shown: list[dict[str, Any]] = []
    for user_id in old.backtest.states:  # every user, in order of first event
        a, b = before.get(user_id, empty), after.get(user_id, empty)
        if a == b:
            continue
        count += 1
        if len(shown) < CHANGED_USERS_SHOWN:
            rules = sorted({r for r, _ in a} | {r for r, _ in b})
            diff = [r for r in rules if _per_rule(a, r) != _per_rule(b, r)]
            shown.append(
                {
                    "user_id": user_id,
                    "old": {r: _per_rule(a, r) for r in diff},
                    "new": {r: _per_rule(b, r) for r in diff},
                }
            )
    return count, shown


def _per_rule(outcome: Outcome, rule: str) -> dict[str, float]:
    """{'sent': 1, 'suppressed cap': 1, 'converted': 1, 'revenue': 45.0}: counts are ints."""
    return {
        what: round(n, 2) if what == "revenue" else int(n)
        for (r, what), n in sorted(outcome.items())
        if r == rule and n
    }


def describe(what: Mapping[str, float]) -> str:
    """'sent 2, converted 1 (45.00)', 'suppressed cap', or 'nothing'."""
    parts: list[str] = []
    for key in ("sent", "control"):
        if what.get(key):
            parts.append(f"{key} {int(what[key])}")
    parts += [f"{k} {int(v)}" for k, v in sorted(what.items()) if k.startswith("suppressed ")]
    if what.get("converted"):
        revenue = what.get("revenue", 0.0)
        money = f" ({revenue:,.2f})" if revenue else ""
        parts.append(f"converted {int(what['converted'])}{money}")
    return ", ".join(parts) or "nothing"


def _signed(value: float, money: bool = False) -> str:
    if not value:
        return "0"
    return f"{value:+,.2f}" if money else f"{value:+,}"


def _cell(row: Mapping[str, Any] | None, figure: str) -> str:
    if row is None:
        return "-"
    value = row.get(figure, 0)
    return f"{value:,.2f}" if figure == "revenue" else f"{value:,}"


_COLUMNS = (("sent", 8), ("suppressed_total", 8), ("converted", 8), ("revenue", 11))
_TITLES = ("sent", "suppressed", "converted", "revenue")


def render_compare_text(summary: Mapping[str, Any]) -> str:
    """The comparison for a person: run figures, per-rule table, reasons, changed users."""
    lines = [
        f"what-if          NEW {summary['new']}  vs  OLD {summary['old']}",
        f"events read      {summary['events_read']:>12,}   rejected {summary['rejected']:,}"
        f"   users {summary['users']:,}",
        f"span             {summary['first_event']} .. {summary['last_event']}"
        f"   until {summary['until']}",
        f"elapsed          {summary['elapsed_s']:>12.2f} s   (both runs; CPU "
        f"{summary['cpu_s']:.2f} s)   peak RSS {summary['peak_rss_mb']:.0f} MB",
        f"triggers         {summary['triggers']['old']:>12,} OLD   "
        f"{summary['triggers']['new']:,} NEW",
        "",
        f"{'':<30}"
        + "".join(f"  {t:-^{3 * w}}" for t, (_, w) in zip(_TITLES, _COLUMNS, strict=True)),
        f"{'rule':<21}{'status':<9}"
        + "".join(f"  {'old':>{w}}{'new':>{w}}{'diff':>{w}}" for _, w in _COLUMNS),
    ]
    for name, row in summary["rules"].items():
        cells = "".join(
            f"  {_cell(row['old'], figure):>{w}}{_cell(row['new'], figure):>{w}}"
            f"{_signed(row['diff'][figure], money=figure == 'revenue'):>{w}}"
            for figure, w in _COLUMNS
        )
        lines.append(f"{name:<21}{row['status']:<9}{cells}")
    lines += _reason_lines(summary["rules"])
    lines += _user_lines(summary)
    return "\n".join(lines)


def _reason_lines(rules: Mapping[str, Any]) -> list[str]:
    """Suppressions by reason, OLD -> NEW, for every rule with any (moved ones signed)."""
    out: list[str] = []
    for name, row in rules.items():
        diff = row["diff"]["suppressed"]
        if not diff:
            continue
        old = (row["old"] or {}).get("suppressed", {})
        new = (row["new"] or {}).get("suppressed", {})
        reasons = ", ".join(
            f"{r} {old.get(r, 0):,} -> {new.get(r, 0):,}" + (f" ({_signed(d)})" if d else "")
            for r, d in diff.items()
        )
        out.append(f"  {name:<21}{reasons}")
    return ["", "suppressed by reason (OLD -> NEW):", *out] if out else []


def _user_lines(summary: Mapping[str, Any]) -> list[str]:
    changed = summary["users_changed"]
    lines = ["", f"users whose outcome changed: {changed:,} of {summary['users']:,}"]
    if not changed:
        return lines
    shown = summary["changed_users"]
    lines.append(f"  first {len(shown)}:" if changed > len(shown) else "  all:")
    lines.append(f"  {'user':<14}{'rule':<22}{'OLD':<34}NEW")
    for user in shown:
        for i, rule in enumerate(user["old"]):
            who = user["user_id"] if i == 0 else ""
            before, after = describe(user["old"][rule]), describe(user["new"][rule])
            lines.append(f"  {who:<14}{rule:<22}{before:<34}{after}")
    return lines
