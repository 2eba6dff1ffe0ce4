"""One send of a run, at its logical time (DESIGN §3, §3.1).

The checks run in this order, each a Decision with its reason when it stops the
send: `when` (the rule's, then the step's: condition_false) -> consent (suppressed,
reason consent: engine/consent.py; a send with transactional destinations goes to
those only) -> cooldown -> quiet hours (deferred or suppressed) -> global cap
(suppressed) -> template (suppressed). A `when` or a
template that goes over its budget (engine/sandbox/budget.py) is `render_failed`
instead, its reason the limit ("loop_iterations", "int_bits", ...): that send alone
is lost, the run and every other user go on (issue 21.1). A send that passes
them all is a Trigger plus a `fired` Decision; control variants (`send: false`)
produce the same Trigger with `send=False`, so exposures are comparable across
variants (they also count towards cooldown and the cap). A `send_at` best-hour
send is first timed (engine/besttime.py): it may wait, as a `deferred` decision
whose detail says why.

What a stop means for the run: a journey goes on after any suppression; the old
forms keep their rule: a cooldown ends the whole series (only its first step checks
it), anything else ends the step and the series goes on.

`late` is set when the trigger is produced more than LATE_AFTER_MS after its
deadline: live timers fire within a tick (0.1 s) plus processing, so 2 s of
lateness means the worker was behind or down when the timer fell due.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, cast

from nudgeflow.engine import besttime
from nudgeflow.engine.actions import Action, Decision, DecisionOutcome, Scalar, Trigger
from nudgeflow.engine.consent import REASON as CONSENT
from nudgeflow.engine.decisions import DEFAULT_VARIANT, run_decision
from nudgeflow.engine.ids import arming_key, trigger_id
from nudgeflow.engine.limits import cap_allows, quiet_until
from nudgeflow.engine.rules import Limits, Rule, Variant
from nudgeflow.engine.sandbox.budget import limit_of
from nudgeflow.engine.scope import (
    WhenScope,
    cart_view,
    trigger_fields,
    user_tz,
    user_view,
    when_context,
)
from nudgeflow.engine.state import MAX_RECENT_FIRES, TIMED, Armed, Fire, UserState
from nudgeflow.engine.steps import Node, Send
from nudgeflow.engine.timefmt import iso_utc

__all__ = [
    "DEFAULT_VARIANT",
    "LATE_AFTER_MS",
    "SENT_DEFERRED",
    "SENT_DONE",
    "SENT_ENDED",
    "Firer",
    "Renderer",
    "WhenScope",
    "cart_view",
    "template_context",
    "user_view",
    "when_context",
]

LATE_AFTER_MS = 2_000


_Check = Callable[["_Firing"], "int | None"]


class Renderer(Protocol):
    def render(self, name: str, context: Mapping[str, Any]) -> str: ...


# What a send means for the run, and why a check stopped it. Plain ints, not Enums: a
# member lookup on an Enum class costs ~90 ns in Python 3.11, and these are read per send.
SENT_DONE = 0  # sent or suppressed: the run moves on
SENT_DEFERRED = 1  # the run stays at this step with a later deadline
SENT_ENDED = 2  # the old forms' cooldown: nothing more of this arming is sent
_STEP = 1  # this send ends here (its decision says why)
_SERIES = 2  # the run ends (the old forms' cooldown)
_DEFER = 3  # tried again at the run's new deadline


@dataclass(slots=True)
class _Firing:
    """One send in progress: what the checks read and where their decisions go."""

    state: UserState
    rule: Rule
    run: Armed
    node: Node
    send: Send
    at_ms: int  # logical fire time (the deadline)
    now_ms: int  # wall-clock time of the firing
    tid: str
    variant: Variant | None
    actions: list[Action]
    at_iso: str
    timing: dict[str, Scalar] | None = None  # a best-hour send: how it was timed
    destinations: tuple[str, ...] | None = None  # consent kept only these (None: all)
    fired_at: str = ""  # set once the checks pass (with armed_iso)
    armed_iso: str = ""

    @property
    def variant_name(self) -> str:
        return self.run.variant or DEFAULT_VARIANT

    def decide(
        self, outcome: DecisionOutcome, reason: str | None = None, **detail: Scalar
    ) -> Decision:
        d = run_decision(
            self.state.user_id,
            self.rule.name,
            self.run,
            self.node.label,
            outcome,
            self.at_iso,
            reason,
            self.tid,
            None,
            detail,
        )
        self.actions.append(d)
        return d


class Firer:
    """Sends for runs; holds the limits and the template renderer."""

    def __init__(
        self,
        limits: Limits,
        templates: Renderer | None,
        fire_horizon_ms: int = 30 * 86_400_000,
        on_exposure: Callable[[Rule, str], None] | None = None,
    ) -> None:
        self.on_exposure = on_exposure
        self.limits = limits
        self.templates = templates
        self.fire_horizon_ms = fire_horizon_ms  # keep fired triggers for opens/clicks/conversions
        self._fallback_tz = limits.quiet_hours.fallback_tz if limits.quiet_hours else "UTC"
        self._plans: dict[str, tuple[tuple[_Check, ...], ...]] = {}

    def prepare(self, rules: Iterable[Rule]) -> None:
        """Per rule and step, the checks that can stop its send, in DESIGN order: a step
        with no `when` and no cooldown does not pay for their calls. `_consent` joins
        between `_when` and `_cooldown` once consent is configured (DESIGN §3.2)."""
        for rule in rules:
            self._plans[rule.name] = tuple(
                self._checks_for(rule, i) for i in range(len(rule.program))
            )

    def _checks_for(self, rule: Rule, index: int) -> tuple[_Check, ...]:
        send = rule.program[index].action
        checks: list[_Check] = [self._paused] if rule.paused else []
        if rule.when is not None or (isinstance(send, Send) and send.when is not None):
            checks.append(self._when)
        consent = self.limits.consent
        if consent is not None and isinstance(send, Send) and not consent.exempt(send.destinations):
            checks.append(self._consent)
        if rule.cooldown_ms is not None and (rule.flow or index == 0):
            checks.append(self._cooldown)
        if self.limits.quiet_hours is not None:
            checks.append(self._quiet_hours)
        if self.limits.cap is not None:
            checks.append(self._cap)
        return tuple(checks)

    def send(
        self,
        state: UserState,
        rule: Rule,
        run: Armed,
        at_ms: int,
        now_ms: int,
        actions: list[Action],
    ) -> int:
        """Send the run's current step at logical time `at_ms` (its deadline)."""
        node = rule.program[run.step]
        send = cast(Send, node.action)
        tid = trigger_id(
            rule.name,
            state.user_id,
            arming_key(run.arm_id, run.armed_at),
            node.label,
            run.instance,
            run.loops,
        )
        variant = rule.experiment.variant(run.variant) if rule.experiment else None
        f = _Firing(
            state, rule, run, node, send, at_ms, now_ms, tid, variant, actions, iso_utc(at_ms)
        )
        if send.send_at is not None and self._best_time(f):
            return SENT_DEFERRED
        stop = None
        plan = self._plans.get(rule.name)
        for check in plan[run.step] if plan is not None else self._checks_for(rule, run.step):
            stop = check(f)
            if stop is not None:
                break
        if stop is None:
            f.fired_at = f.at_iso if now_ms == at_ms else iso_utc(now_ms)
            f.armed_iso = iso_utc(run.armed_at)
            message = self._render(f)
            if message is not None:
                self._emit(f, message)
        if stop == _DEFER:
            return SENT_DEFERRED
        return SENT_ENDED if stop == _SERIES else SENT_DONE

    def _best_time(self, f: _Firing) -> bool:
        """Time a best-hour send once; True when it now waits for the user's best hour."""
        run, send_at = f.run, f.send.send_at
        assert send_at is not None
        if run.flags & TIMED:
            f.timing = {"timing": "best_hour"}
            return False
        run.flags |= TIMED
        tz = user_tz(f.state)
        t = besttime.timing(f.state.activity, f.at_ms, send_at.within_ms, tz, self._fallback_tz)
        f.timing = t.detail()
        if t.send_ms <= f.at_ms:
            return False
        run.deadline = t.send_ms
        f.decide("deferred", "best_time", **f.timing).deadline = iso_utc(t.send_ms)
        return True

    def _paused(self, f: _Firing) -> int | None:
        """A paused rule (DESIGN §3.3): the due send is `suppressed` with reason `paused`;
        the run goes on to its next step, its timers kept."""
        f.decide("suppressed", "paused")
        return _STEP

    def _when(self, f: _Firing) -> int | None:
        """The rule's `when`, then the step's."""
        for when in f.rule.when, f.send.when:
            if when is not None:
                ok, why = when.evaluate_in(WhenScope(f.state, f.run, f.at_ms))
                if not ok:
                    limit = limit_of(why)
                    if limit is None:
                        f.decide("condition_false", why, expression=when.source)
                    else:
                        f.decide("render_failed", limit, expression=when.source, error=why)
                    return _STEP
        return None

    def _consent(self, f: _Firing) -> int | None:
        """The consent hook (DESIGN §3.2): a marketing send to an unsubscribed user is
        `suppressed` with reason `consent` here, before cooldown and the cap count it; a send
        with transactional destinations too goes to those only (engine/consent.py)."""
        assert self.limits.consent is not None
        kept = self.limits.consent.allowed(f.state, f.send.destinations)
        if kept is None:
            return None
        if not kept:
            f.decide("suppressed", CONSENT)
            return _STEP
        f.destinations = kept
        return None

    def _cooldown(self, f: _Firing) -> int | None:
        cooldown = f.rule.cooldown_ms
        flow = f.rule.flow
        if cooldown is None or (not flow and f.run.step != 0):
            return None
        last = f.state.last_fire.get(f.rule.name)
        if last is None or f.at_ms - last >= cooldown:
            return None
        f.decide("suppressed", "cooldown", until=iso_utc(last + cooldown))
        return _STEP if flow else _SERIES

    def _quiet_hours(self, f: _Firing) -> int | None:
        quiet = self.limits.quiet_hours
        if quiet is None:
            return None
        until = quiet_until(f.at_ms, user_tz(f.state), quiet)
        if until is None:
            return None
        if quiet.action == "defer":
            f.run.deadline = until
            f.run.deferred = True
            f.decide("deferred", "quiet_hours").deadline = iso_utc(until)
            return _DEFER
        f.decide("suppressed", "quiet_hours")
        return _STEP

    def _cap(self, f: _Firing) -> int | None:
        cap = self.limits.cap
        if cap is None or cap_allows(f.state.fire_times, cap, f.at_ms):
            return None
        f.decide("suppressed", "cap", cap=cap.count)
        return _STEP

    def _render(self, f: _Firing) -> str | None:
        """The message, or None (and a decision) when the template cannot be rendered."""
        variant = f.variant
        template = (variant.template if variant and variant.template else None) or f.send.template
        if template is None or self.templates is None:
            return ""
        try:
            return self.templates.render(template, template_context(f))
        except Exception as exc:  # TemplateError and anything a renderer raises
            limit = getattr(exc, "limit", None)  # set when the render went over its budget
            if isinstance(limit, str):
                f.decide("render_failed", limit, error=str(exc)[:500], template=template)
            else:
                f.decide("suppressed", "template_error", error=str(exc)[:500], template=template)
            return None

    def _emit(self, f: _Firing, message: str) -> None:
        """The Trigger, its `fired` decision, and what the user's state remembers of it."""
        run, lateness = f.run, max(0, f.now_ms - f.at_ms)
        send = f.variant.send if f.variant is not None else True
        f.actions.append(
            Trigger(
                trigger_id=f.tid,
                rule=f.rule.name,
                user_id=f.state.user_id,
                variant=f.variant_name,
                step=f.node.label,
                fired_at=f.fired_at,
                deadline=f.at_iso,
                armed_at=f.armed_iso,
                late=lateness > LATE_AFTER_MS,
                lateness_s=lateness / 1000,
                message=message,
                destinations=list(
                    f.send.destinations if f.destinations is None else f.destinations
                ),
                send=send,
                fields=trigger_fields(f.state, run),
            )
        )
        if f.timing is None:
            f.decide("fired", None if send else "control", send=send)
        else:
            f.decide("fired", None if send else "control", send=send, **f.timing)
        self._record(f)

    def _record(self, f: _Firing) -> None:
        state, rule, at_ms = f.state, f.rule, f.at_ms
        state.last_fire[rule.name] = at_ms
        if rule.experiment is not None and self.on_exposure is not None:
            self.on_exposure(rule, f.run.variant)
        cap = self.limits.cap
        if cap is not None:
            floor = at_ms - cap.per_ms
            times = state.fire_times
            if times and min(times) <= floor:  # only rebuild when something left the window
                times = state.fire_times = [t for t in times if t > floor]
            times.append(at_ms)
        fires = state.fires
        fires.append(Fire(f.tid, rule.name, f.variant_name, at_ms, 0, f.node.label))
        floor = max(state.last_ts, at_ms) - self.fire_horizon_ms
        drop = max(0, len(fires) - MAX_RECENT_FIRES)
        while drop < len(fires) and fires[drop].at < floor:
            drop += 1
        if drop:
            del fires[:drop]


def template_context(f: _Firing) -> dict[str, Any]:
    """What a message template sees (DESIGN §3.4); SAMPLE_CONTEXT in templates.py mirrors it."""
    run = f.run
    return {
        "user": user_view(f.state),
        "cart": cart_view(f.state),
        "event": {"type": run.arm_type, "ts": f.armed_iso, "properties": run.arm_props},
        "rule": f.rule.name,
        "variant": f.variant_name,
        "trigger_id": f.tid,
        "step": f.node.label,
        "fired_at": f.fired_at,
    }
