"""Property and trait values the engine can apply and the state can hold (issue 21.5, 21.7).

An event is accepted only if everything in it can be applied, so nothing is answered
202 and then dead-lettered, and no decision is published for a state that cannot be
saved. The limits come from what the engine does with the values:

- The numeric fields the engine reads (`quantity`, and the amounts `price`,
  `cart_value`, `revenue`, `total`, `value`) may be JSON numbers or numeric strings, as
  the engine reads both; a number there must be finite and within range: `quantity`
  within +-MAX_QUANTITY (the engine turns it into an integer and adds it up per cart
  line), an amount within +-MAX_AMOUNT. `"inf"`, `"nan"` and `1e308` are refused. A
  string that is not a number at all is left alone (the engine ignores it, as before).
- Every integer anywhere in `properties` and `traits` fits the state's encoding
  (msgpack: from -2**63 to 2**64 - 1), since the arming event's properties and the
  traits are kept in the user's state.
- `traits.timezone` (quiet hours and template times use it) is null or an IANA time
  zone name, exactly as the tz database spells it (`Europe/Berlin`, `UTC`): a path, a
  POSIX TZ string, a name with a NUL or another spelling is refused instead of being
  silently read as UTC.

Refusals are `EventError`s with reason `out_of_range` or `invalid_time_zone` and the
dotted field (`properties.quantity`, `properties.items[2].n`, `traits.timezone`).
"""

from __future__ import annotations

import math
import zoneinfo
from functools import cache
from typing import Any

from nudgeflow.events.errors import EventError

MAX_QUANTITY = 1_000_000_000
MAX_AMOUNT = 1e15
AMOUNT_FIELDS = ("price", "cart_value", "revenue", "total", "value")
INT_MIN = -(2**63)
INT_MAX = 2**64 - 1
OUT_OF_RANGE = "out_of_range"
INVALID_TIME_ZONE = "invalid_time_zone"
_NOT_ZONES = frozenset({"localtime", "posixrules"})  # files beside the zones, host-specific


def check(obj: dict[str, Any], field: str) -> None:
    """Raise `EventError` for the first value of `properties` or `traits` (`field`) that
    the engine could not apply; the object is already known to nest at most max_depth."""
    if field == "properties":
        _numeric_field(obj, "quantity", MAX_QUANTITY)
        for name in AMOUNT_FIELDS:
            _numeric_field(obj, name, MAX_AMOUNT)
    elif "timezone" in obj:
        _time_zone(obj["timezone"])
    path = _oversized_int(obj, field)
    if path is not None:
        raise EventError(
            OUT_OF_RANGE, f"{path} is an integer beyond 64 bits; send it as a string", path
        )


def _numeric_field(props: dict[str, Any], name: str, limit: float) -> None:
    value: Any = props.get(name)
    kind = type(value)
    if kind is str:
        try:
            number = float(value)
        except ValueError:
            return  # not a number: the engine ignores it
    elif kind is float or kind is int:
        number = value  # an int is compared as it is: 10**400 has no float
    else:
        return
    field = f"properties.{name}"
    if kind is not int and not math.isfinite(number):
        raise EventError(
            OUT_OF_RANGE, f"{field} must be a finite number, got {_shown(value)}", field
        )
    if abs(number) > limit:
        raise EventError(
            OUT_OF_RANGE, f"{field} must be within +-{limit:g}, got {_shown(value)}", field
        )


def _oversized_int(value: Any, path: str) -> str | None:
    """The dotted path of the first integer the state's encoding cannot carry, or None
    (recursion bounded by the depth limit checked before)."""
    kind = type(value)
    if kind is int:
        return None if INT_MIN <= value <= INT_MAX else path
    if kind is dict:
        for key, child in value.items():
            found = _oversized_int(child, f"{path}.{key}")
            if found is not None:
                return found
    elif kind is list:
        for i, child in enumerate(value):
            found = _oversized_int(child, f"{path}[{i}]")
            if found is not None:
                return found
    return None


def _time_zone(value: Any) -> None:
    if value is None or (type(value) is str and value in iana_zones()):
        return
    field = "traits.timezone"
    got = _shown(value) if type(value) is str else f"a {type(value).__name__}"
    raise EventError(
        INVALID_TIME_ZONE,
        f"{field} {got} is not an IANA time zone name (e.g. Europe/Berlin, America/New_York, UTC)",
        field,
    )


@cache
def iana_zones() -> frozenset[str]:
    """The zone names `zoneinfo` can load (the system database or the tzdata package)."""
    return frozenset(zoneinfo.available_timezones()) - _NOT_ZONES


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
