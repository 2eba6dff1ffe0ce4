"""What expressions and templates see of a user: the views and the lazy `when` scope.

`when`, `entry`, `instance`, a branch's `if` and an `until` wait's `where` are all
evaluated here over `user` (traits), `cart`, `event`, `now`, `count()` and `sum()`.
`event` is the run's arming event, except in `where`, where it is the awaited event.
Times are epoch ms (`now`, `event.ts`) for arithmetic.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

from jinja2 import Undefined

from nudgeflow.engine.actions import Scalar
from nudgeflow.engine.durations import parse_duration
from nudgeflow.engine.expressions import Expression
from nudgeflow.engine.state import Armed, UserState, count_events, sum_property

_KEY = re.compile(r"[^a-z0-9]+")


def user_view(state: UserState) -> dict[str, Any]:
    view = dict(state.profile)
    view["id"] = state.user_id
    return view


def cart_view(state: UserState) -> dict[str, Any]:
    """One pass over the cart (read by every `cart.` expression and every template);
    value and count as `computed_cart_value` and `cart_count` give them."""
    items = []
    value: float = 0
    count = 0
    for pid, i in state.cart.items():
        items.append(
            {"product_id": pid, "product_name": i.name, "price": i.price, "quantity": i.qty}
        )
        value += i.price * i.qty
        count += i.qty
    return {
        "items": items,
        "value": state.cart_value if state.cart_value is not None else round(value, 2),
        "count": count,
        "currency": state.currency,
    }


def arming_view(armed: Armed) -> dict[str, Any]:
    return {"type": armed.arm_type, "ts": armed.armed_at, "properties": armed.arm_props}


class WhenScope:
    """What an expression sees, built lazily: only the names an expression uses are made."""

    __slots__ = ("armed", "at_ms", "event", "state")

    def __init__(
        self, state: UserState, armed: Armed, at_ms: int, event: dict[str, Any] | None = None
    ) -> None:
        self.state = state
        self.armed = armed
        self.at_ms = at_ms
        self.event = event  # None: the arming event

    def get(self, name: str, default: Any, /) -> Any:
        if name == "cart":
            return cart_view(self.state)
        if name == "user":
            return user_view(self.state)
        if name == "event":
            return self.event if self.event is not None else arming_view(self.armed)
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
        context = when_context(self.state, self.armed, self.at_ms)
        if self.event is not None:
            context["event"] = self.event
        return context


_window_ms = lru_cache(maxsize=256)(parse_duration)


def when_context(state: UserState, armed: Armed, at_ms: int) -> dict[str, Any]:
    """What a `when` sees: times are epoch ms (`now`, `event.ts`) for arithmetic."""
    return {
        "user": user_view(state),
        "cart": cart_view(state),
        "event": arming_view(armed),
        "now": at_ms,
        "count": lambda t, w: count_events(state, t, parse_duration(w), at_ms),
        "sum": lambda t, p, w: sum_property(state, t, p, parse_duration(w), at_ms),
    }


MAX_INSTANCE_CHARS = 200


def value_of(expr: Expression, scope: WhenScope) -> str | None:
    """An `instance` expression's value as a run key part, or None (undefined, null, error).

    `Expression` answers booleans only; its compiled form gives the value, under the
    same sandbox (and, where expressions.py meters it, the same budget).
    """
    try:
        value = expr._compiled(**scope.to_context())
    except Exception:  # undefined, sandbox, budget, type errors: no instance
        return None
    if value is None or isinstance(value, Undefined | dict | list):
        return None
    text = str(value)
    return text[:MAX_INSTANCE_CHARS] if text else None


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
    if armed.instance:
        fields["instance"] = armed.instance
    return fields


@lru_cache(maxsize=4096)
def _flat_key(key: Any) -> str:
    return "user_" + _KEY.sub("_", str(key).lower()).strip("_")


def _scalar(value: Any) -> Scalar:
    return value if isinstance(value, str | int | float | bool) or value is None else str(value)


def user_tz(state: UserState) -> str | None:
    tz = state.profile.get("timezone")
    return tz if isinstance(tz, str) else None
