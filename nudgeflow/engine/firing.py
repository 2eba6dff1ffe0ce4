"""Firing one armed rule at its logical time (DESIGN §3, issue 5).

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
from functools import lru_cache
from typing import Any, Protocol

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
        variant = rule.experiment.variant(armed.variant) if rule.experiment else None
        variant_name = armed.variant or DEFAULT_VARIANT
        tid = trigger_id(
            rule.name, state.user_id, arming_key(armed.arm_id, armed.armed_at), armed.step
        )
        at_iso = iso_utc(at_ms)

        def decide(outcome: Any, reason: str | None = None, **detail: Scalar) -> Decision:
            d = Decision(
                user_id=state.user_id,
                rule=rule.name,
                outcome=outcome,
                at=at_iso,
                reason=reason,
                trigger_id=tid,
                variant=variant_name,
                deadline=at_iso,
                detail={"step": armed.step, **detail},
            )
            actions.append(d)
            return d

        stop_series = self._check(state, rule, armed, at_ms, tid, decide, actions, now_ms, variant)
        if stop_series or rule.name in state.armed:  # ended, or deferred (re-armed)
            return
        nxt = armed.step + 1
        if nxt < len(rule.steps):
            deadline = armed.armed_at + rule.steps[nxt].delay_ms
            state.armed[rule.name] = Armed(
                deadline=max(deadline, at_ms),
                armed_at=armed.armed_at,
                arm_id=armed.arm_id,
                arm_type=armed.arm_type,
                arm_props=armed.arm_props,
                step=nxt,
                variant=armed.variant,
                last_activity=armed.last_activity,
            )
            actions.append(
                Decision(
                    user_id=state.user_id,
                    rule=rule.name,
                    outcome="armed",
                    at=at_iso,
                    variant=variant_name,
                    deadline=iso_utc(max(deadline, at_ms)),
                    detail={"step": nxt},
                )
            )

    def _check(
        self,
        state: UserState,
        rule: Rule,
        armed: Armed,
        at_ms: int,
        tid: str,
        decide: Any,
        actions: list[Action],
        now_ms: int,
        variant: Variant | None,
    ) -> bool:
        """Run the checks and produce the trigger; True if the series must stop."""
        if rule.when is not None:
            ok, why = rule.when.evaluate_in(WhenScope(state, armed, at_ms))
            if not ok:
                decide("condition_false", why, expression=rule.when.source)
                return False
        if rule.cooldown_ms is not None and armed.step == 0:
            last = state.last_fire.get(rule.name)
            if last is not None and at_ms - last < rule.cooldown_ms:
                decide("suppressed", "cooldown", until=iso_utc(last + rule.cooldown_ms))
                return True
        limits = self.limits
        if limits.quiet_hours is not None:
            until = quiet_until(at_ms, _tz(state), limits.quiet_hours)
            if until is not None:
                if limits.quiet_hours.action == "defer":
                    state.armed[rule.name] = Armed(
                        deadline=until,
                        armed_at=armed.armed_at,
                        arm_id=armed.arm_id,
                        arm_type=armed.arm_type,
                        arm_props=armed.arm_props,
                        step=armed.step,
                        variant=armed.variant,
                        last_activity=armed.last_activity,
                        deferred=True,
                    )
                    d = decide("deferred", "quiet_hours")
                    d.deadline = iso_utc(until)
                    return False
                decide("suppressed", "quiet_hours")
                return False
        cap = limits.cap
        if cap is not None and not cap_allows(state.fire_times, cap, at_ms):
            decide("suppressed", "cap", cap=cap.count)
            return False
        step = rule.steps[armed.step]
        template = (variant.template if variant and variant.template else None) or step.template
        fired_at = iso_utc(now_ms)
        message = ""
        if template is not None and self.templates is not None:
            context = {
                "user": user_view(state),
                "cart": cart_view(state),
                "event": {
                    "type": armed.arm_type,
                    "ts": iso_utc(armed.armed_at),
                    "properties": armed.arm_props,
                },
                "rule": rule.name,
                "variant": armed.variant or DEFAULT_VARIANT,
                "trigger_id": tid,
                "step": armed.step,
                "fired_at": fired_at,
            }
            try:
                message = self.templates.render(template, context)
            except Exception as exc:  # TemplateError and anything a renderer raises
                decide("suppressed", "template_error", error=str(exc)[:500], template=template)
                return False
        lateness = max(0, now_ms - at_ms)
        send = variant.send if variant is not None else True
        actions.append(
            Trigger(
                trigger_id=tid,
                rule=rule.name,
                user_id=state.user_id,
                variant=armed.variant or DEFAULT_VARIANT,
                step=armed.step,
                fired_at=fired_at,
                deadline=iso_utc(at_ms),
                armed_at=iso_utc(armed.armed_at),
                late=lateness > LATE_AFTER_MS,
                lateness_s=lateness / 1000,
                message=message,
                destinations=list(rule.destinations),
                send=send,
                fields=trigger_fields(state, armed),
            )
        )
        decide("fired", None if send else "control", send=send)
        self._record(state, rule, tid, armed, at_ms)
        return False

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


def _tz(state: UserState) -> str | None:
    tz = state.profile.get("timezone")
    return tz if isinstance(tz, str) else None
