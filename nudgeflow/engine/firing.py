"""Firing one armed rule at its logical time (DESIGN §3).

The checks run in this order, each a Decision with its reason when it stops
the firing: `when` (condition_false) -> cooldown -> quiet hours (deferred or
suppressed) -> global cap (suppressed) -> template (suppressed). A firing that
passes them all is a Trigger plus a `fired` Decision; control variants
(`send: false`) produce the same Trigger with `send=False`, so exposures are
comparable across variants (they also count towards cooldown and the cap).

`late` is set when the trigger is produced more than LATE_AFTER_MS after its
deadline: live timers fire within a tick (0.1 s) plus processing, so 2 s of
lateness means the worker was behind or down when the timer fell due.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import Enum
from functools import lru_cache
from typing import Any, Protocol

from msgspec import structs

from nudgeflow.engine.actions import Action, Decision, Scalar, Trigger
from nudgeflow.engine.durations import parse_duration
from nudgeflow.engine.ids import arming_key, trigger_id
from nudgeflow.engine.limits import cap_allows, quiet_until
from nudgeflow.engine.rules import Limits, Rule, Variant
from nudgeflow.engine.state import (
    MAX_RECENT_FIRES,
    Armed,
    Fire,
    UserState,
    count_events,
    sum_property,
)
from nudgeflow.engine.timefmt import iso_utc

LATE_AFTER_MS = 2_000
DEFAULT_VARIANT = "default"
_KEY = re.compile(r"[^a-z0-9]+")


class Renderer(Protocol):
    def render(self, name: str, context: Mapping[str, Any]) -> str: ...


def user_view(state: UserState) -> dict[str, Any]:
    view = dict(state.profile)
    view["id"] = state.user_id
    return view


def cart_view(state: UserState) -> dict[str, Any]:
    return {
        "items": [
            {"product_id": pid, "product_name": i.name, "price": i.price, "quantity": i.qty}
            for pid, i in state.cart.items()
        ],
        "value": state.computed_cart_value(),
        "count": state.cart_count(),
        "currency": state.currency,
    }


class WhenScope:
    """What a `when` sees, built lazily: only the names an expression uses are made."""

    __slots__ = ("armed", "at_ms", "state")

    def __init__(self, state: UserState, armed: Armed, at_ms: int) -> None:
        self.state = state
        self.armed = armed
        self.at_ms = at_ms

    def get(self, name: str, default: Any, /) -> Any:
        if name == "cart":
            return cart_view(self.state)
        if name == "user":
            return user_view(self.state)
        if name == "event":
            armed = self.armed
            return {"type": armed.arm_type, "ts": armed.armed_at, "properties": armed.arm_props}
        if name == "now":
            return self.at_ms
        if name in ("count", "sum"):
            return self.to_context()[name]
        return default

    def call(self, name: str, args: tuple[Any, ...], /) -> Any:
        if name == "count":
            event_type, window = args
            return count_events(self.state, event_type, _window_ms(window), self.at_ms)
        if name == "sum":
            event_type, prop, window = args
            return sum_property(self.state, event_type, prop, _window_ms(window), self.at_ms)
        return self.to_context()[name](*args)  # expressions.py only lets count/sum through

    def to_context(self) -> dict[str, Any]:
        return when_context(self.state, self.armed, self.at_ms)


_window_ms = lru_cache(maxsize=256)(parse_duration)


def when_context(state: UserState, armed: Armed, at_ms: int) -> dict[str, Any]:
    """What a `when` sees: times are epoch ms (`now`, `event.ts`) for arithmetic."""
    return {
        "user": user_view(state),
        "cart": cart_view(state),
        "event": {"type": armed.arm_type, "ts": armed.armed_at, "properties": armed.arm_props},
        "now": at_ms,
        "count": lambda t, w: count_events(state, t, parse_duration(w), at_ms),
        "sum": lambda t, p, w: sum_property(state, t, p, parse_duration(w), at_ms),
    }


def trigger_fields(state: UserState, armed: Armed) -> dict[str, Scalar]:
    """Flat, snake_case extras for Zapier-style field mapping (no arrays of objects)."""
    profile = state.profile
    fields: dict[str, Scalar] = {
        "user_name": _scalar(profile.get("name")),
        "user_email": _scalar(profile.get("email")),
    }
    for key, value in profile.items():
        if key in ("name", "email", "id") or not isinstance(value, str | int | float | bool):
            continue
        fields.setdefault(_flat_key(key), value)
    first = next(iter(state.cart.values()), None)
    fields.update(
        cart_value=state.computed_cart_value(),
        cart_item_count=state.cart_count(),
        cart_first_item_name=first.name if first is not None else None,
        currency=state.currency,
        event_type=armed.arm_type,
    )
    return fields


@lru_cache(maxsize=4096)
def _flat_key(key: Any) -> str:
    return "user_" + _KEY.sub("_", str(key).lower()).strip("_")


def _scalar(value: Any) -> Scalar:
    return value if isinstance(value, str | int | float | bool) or value is None else str(value)


class _Stop(Enum):
    """Why a check ended the firing: this step only, or the whole series."""

    STEP = "step"  # the step ends here (its decision says why); the series continues
    SERIES = "series"  # nothing more of this arming is sent (cooldown)


@dataclass(slots=True)
class _Firing:
    """One firing in progress: what the checks read and where their decisions go."""

    state: UserState
    rule: Rule
    armed: Armed
    at_ms: int  # logical fire time (the deadline)
    now_ms: int  # wall-clock time of the firing
    tid: str
    variant: Variant | None
    actions: list[Action]
    at_iso: str

    @property
    def variant_name(self) -> str:
        return self.armed.variant or DEFAULT_VARIANT

    def decide(self, outcome: Any, reason: str | None = None, **detail: Scalar) -> Decision:
        d = Decision(
            user_id=self.state.user_id,
            rule=self.rule.name,
            outcome=outcome,
            at=self.at_iso,
            reason=reason,
            trigger_id=self.tid,
            variant=self.variant_name,
            deadline=self.at_iso,
            detail={"step": self.armed.step, **detail},
        )
        self.actions.append(d)
        return d


class Firer:
    """Fires armed rules; holds the limits and the template renderer."""

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

    def fire(
        self,
        state: UserState,
        rule: Rule,
        armed: Armed,
        at_ms: int,
        now_ms: int,
        actions: list[Action],
    ) -> None:
        """Fire `armed` at logical time `at_ms` (its deadline); re-arm the next step."""
        del state.armed[rule.name]
        tid = trigger_id(
            rule.name, state.user_id, arming_key(armed.arm_id, armed.armed_at), armed.step
        )
        variant = rule.experiment.variant(armed.variant) if rule.experiment else None
        f = _Firing(state, rule, armed, at_ms, now_ms, tid, variant, actions, iso_utc(at_ms))
        stop = self._check(f)
        if stop is None:
            message = self._render(f)
            if message is not None:
                self._emit(f, message)
        if stop is _Stop.SERIES or rule.name in state.armed:  # ended, or deferred (re-armed)
            return
        self._arm_next_step(f)

    def _check(self, f: _Firing) -> _Stop | None:
        """The checks in DESIGN order; the first that stops the firing decides why."""
        for check in (self._when, self._cooldown, self._quiet_hours, self._cap):
            stop = check(f)
            if stop is not None:
                return stop
        return None

    def _when(self, f: _Firing) -> _Stop | None:
        when = f.rule.when
        if when is None:
            return None
        ok, why = when.evaluate_in(WhenScope(f.state, f.armed, f.at_ms))
        if ok:
            return None
        f.decide("condition_false", why, expression=when.source)
        return _Stop.STEP

    def _cooldown(self, f: _Firing) -> _Stop | None:
        cooldown = f.rule.cooldown_ms
        if cooldown is None or f.armed.step != 0:
            return None
        last = f.state.last_fire.get(f.rule.name)
        if last is None or f.at_ms - last >= cooldown:
            return None
        f.decide("suppressed", "cooldown", until=iso_utc(last + cooldown))
        return _Stop.SERIES

    def _quiet_hours(self, f: _Firing) -> _Stop | None:
        quiet = self.limits.quiet_hours
        if quiet is None:
            return None
        until = quiet_until(f.at_ms, _tz(f.state), quiet)
        if until is None:
            return None
        if quiet.action == "defer":
            f.state.armed[f.rule.name] = structs.replace(f.armed, deadline=until, deferred=True)
            f.decide("deferred", "quiet_hours").deadline = iso_utc(until)
        else:
            f.decide("suppressed", "quiet_hours")
        return _Stop.STEP

    def _cap(self, f: _Firing) -> _Stop | None:
        cap = self.limits.cap
        if cap is None or cap_allows(f.state.fire_times, cap, f.at_ms):
            return None
        f.decide("suppressed", "cap", cap=cap.count)
        return _Stop.STEP

    def _render(self, f: _Firing) -> str | None:
        """The message, or None (and a decision) when the template cannot be rendered."""
        step = f.rule.steps[f.armed.step]
        variant = f.variant
        template = (variant.template if variant and variant.template else None) or step.template
        if template is None or self.templates is None:
            return ""
        try:
            return self.templates.render(template, template_context(f))
        except Exception as exc:  # TemplateError and anything a renderer raises
            f.decide("suppressed", "template_error", error=str(exc)[:500], template=template)
            return None

    def _emit(self, f: _Firing, message: str) -> None:
        """The Trigger, its `fired` decision, and what the user's state remembers of it."""
        armed, lateness = f.armed, max(0, f.now_ms - f.at_ms)
        send = f.variant.send if f.variant is not None else True
        f.actions.append(
            Trigger(
                trigger_id=f.tid,
                rule=f.rule.name,
                user_id=f.state.user_id,
                variant=f.variant_name,
                step=armed.step,
                fired_at=iso_utc(f.now_ms),
                deadline=f.at_iso,
                armed_at=iso_utc(armed.armed_at),
                late=lateness > LATE_AFTER_MS,
                lateness_s=lateness / 1000,
                message=message,
                destinations=list(f.rule.destinations),
                send=send,
                fields=trigger_fields(f.state, armed),
            )
        )
        f.decide("fired", None if send else "control", send=send)
        self._record(f.state, f.rule, f.tid, armed, f.at_ms)

    def _arm_next_step(self, f: _Firing) -> None:
        nxt = f.armed.step + 1
        if nxt >= len(f.rule.steps):
            return
        deadline = max(f.armed.armed_at + f.rule.steps[nxt].delay_ms, f.at_ms)
        f.state.armed[f.rule.name] = structs.replace(
            f.armed, deadline=deadline, step=nxt, deferred=False
        )
        f.actions.append(
            Decision(
                user_id=f.state.user_id,
                rule=f.rule.name,
                outcome="armed",
                at=f.at_iso,
                variant=f.variant_name,
                deadline=iso_utc(deadline),
                detail={"step": nxt},
            )
        )

    def _record(self, state: UserState, rule: Rule, tid: str, armed: Armed, at_ms: int) -> None:
        state.last_fire[rule.name] = at_ms
        if rule.experiment is not None and self.on_exposure is not None:
            self.on_exposure(rule, armed.variant)
        cap = self.limits.cap
        if cap is not None:
            floor = at_ms - cap.per_ms
            state.fire_times = [t for t in state.fire_times if t > floor]
            state.fire_times.append(at_ms)
        fires = state.fires
        fires.append(Fire(tid, rule.name, armed.variant or DEFAULT_VARIANT, at_ms))
        floor = max(state.last_ts, at_ms) - self.fire_horizon_ms
        drop = max(0, len(fires) - MAX_RECENT_FIRES)
        while drop < len(fires) and fires[drop].at < floor:
            drop += 1
        if drop:
            del fires[:drop]


def template_context(f: _Firing) -> dict[str, Any]:
    """What a message template sees (DESIGN §3.4); SAMPLE_CONTEXT in templates.py mirrors it."""
    armed = f.armed
    return {
        "user": user_view(f.state),
        "cart": cart_view(f.state),
        "event": {
            "type": armed.arm_type,
            "ts": iso_utc(armed.armed_at),
            "properties": armed.arm_props,
        },
        "rule": f.rule.name,
        "variant": f.variant_name,
        "trigger_id": f.tid,
        "step": armed.step,
        "fired_at": iso_utc(f.now_ms),
    }


def _tz(state: UserState) -> str | None:
    tz = state.profile.get("timezone")
    return tz if isinstance(tz, str) else None
