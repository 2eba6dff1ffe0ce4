"""Money and dates as a message shows them: the `money`, `date` and `datetime` filters.

Invariant: each output is a bounded, non-compounding function of its input (a number or
an instant in, one short string out), which is what lets templates.py register these as
light filters (sandbox/light.py): a template that uses them can still render with no meter.
Money is rounded half-up in Decimal, never in binary floating point.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

import jinja2

from nudgeflow.engine.limits import zone_for

# --- money --------------------------------------------------------------------------------

# symbol, decimals; anything else renders as "1,234.50 SEK"
_CURRENCIES: dict[str, tuple[str, int]] = {
    "USD": ("$", 2),
    "EUR": ("€", 2),
    "GBP": ("£", 2),
    "JPY": ("¥", 0),
    "CNY": ("CN¥", 2),
    "KRW": ("₩", 0),
    "INR": ("₹", 2),
    "CAD": ("CA$", 2),
    "AUD": ("A$", 2),
    "NZD": ("NZ$", 2),
    "BRL": ("R$", 2),
    "MXN": ("MX$", 2),
    "CHF": ("CHF ", 2),
    "BHD": ("", 3),
    "KWD": ("", 3),
}


def format_money(value: Any, currency: str | None = "USD") -> str:
    """`59.9, "USD"` -> "$59.90"; JPY has no minor unit ("¥1,200"); unknown codes trail."""
    if isinstance(value, bool):
        raise TypeError("money expects a number, got a boolean")
    try:
        amount = Decimal(str(value))
    except InvalidOperation as exc:
        raise ValueError(f"money expects a number, got {value!r}") from exc
    if not amount.is_finite():
        raise ValueError(f"money expects a finite number, got {value!r}")
    code = (currency or "USD").upper()
    symbol, decimals = _CURRENCIES.get(code, ("", 2))
    rounded = amount.quantize(Decimal(1).scaleb(-decimals), rounding=ROUND_HALF_UP)
    digits = f"{abs(rounded):,.{decimals}f}"
    sign = "-" if rounded < 0 else ""
    if code in _CURRENCIES and symbol:
        return f"{sign}{symbol}{digits}"
    return f"{sign}{digits} {code}"


@jinja2.pass_context
def money_filter(context: jinja2.runtime.Context, value: Any, currency: str | None = None) -> str:
    """`{{ cart.value | money }}`: in the cart's currency unless one is given."""
    if currency is None:
        cart = context.get("cart")
        currency = cart.get("currency") if isinstance(cart, Mapping) else None
    return format_money(value, currency)


# --- dates --------------------------------------------------------------------------------


def parse_instant(value: Any) -> dt.datetime:
    """ISO 8601 string (``Z`` allowed, naive means UTC), epoch ms, or datetime -> aware."""
    if isinstance(value, dt.datetime):
        instant = value
    elif isinstance(value, int | float) and not isinstance(value, bool):
        instant = dt.datetime.fromtimestamp(value / 1000, dt.UTC)
    elif isinstance(value, str):
        instant = dt.datetime.fromisoformat(value.strip())
    else:
        raise TypeError(f"expected an ISO 8601 time or epoch ms, got {value!r}")
    return instant if instant.tzinfo else instant.replace(tzinfo=dt.UTC)


def format_datetime(value: Any, fmt: str = "%Y-%m-%d %H:%M", tz: str | None = None) -> str:
    """strftime of an instant, shown in `tz` (IANA; unknown -> UTC) or as given."""
    instant = parse_instant(value)
    if tz is not None:
        instant = instant.astimezone(zone_for(tz))
    return instant.strftime(fmt)


def format_date(value: Any, fmt: str = "%Y-%m-%d", tz: str | None = None) -> str:
    return format_datetime(value, fmt, tz)
