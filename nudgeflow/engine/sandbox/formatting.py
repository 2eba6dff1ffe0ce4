"""The sandbox's `str.format` / `str.format_map`, each field checked before it is formatted.

Invariant: `'{:0200000000}'.format(1)` would build 200 MB in one C call, so the running
size of the result (the format string plus every field's predicted size, `spec_size`) is
checked against string_length *before* each field is formatted, and the clock with it.
A format call with no meter raises `Unmetered` (a light render cannot make one).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from functools import update_wrapper
from typing import Any

from jinja2.sandbox import SandboxedEnvironment, SandboxedFormatter
from markupsafe import EscapeFormatter, Markup

from nudgeflow.engine.sandbox.meter import Meter, active
from nudgeflow.engine.sandbox.sizes import spec_size


class _BudgetFormatter(SandboxedFormatter):
    """The sandbox's str.format, checking each field's predicted size before formatting it."""

    def __init__(self, env: SandboxedEnvironment, meter: Meter, **kwargs: Any) -> None:
        super().__init__(env, **kwargs)
        self._meter = meter
        self._size = 0

    def vformat(self, format_string: str, args: Sequence[Any], kwargs: Mapping[str, Any]) -> str:
        self._size = len(format_string)
        return super().vformat(format_string, args, kwargs)

    def format_field(self, value: Any, format_spec: str) -> Any:
        meter = self._meter
        meter.check_time()
        self._size += spec_size(value, format_spec, meter.budget.string_length)
        meter.allow_str(self._size, "format")
        return super().format_field(value, format_spec)


class _BudgetEscapeFormatter(_BudgetFormatter, EscapeFormatter):
    pass


def budgeted_str_format(env: SandboxedEnvironment, value: Any) -> Callable[..., str] | None:
    """`value` (a bound `format` or `format_map`) as the budgeted str.format of `env`, or
    None if its owner is not a str."""
    owner = value.__self__
    if not isinstance(owner, str):
        return None
    str_type = type(owner)
    is_format_map = value.__name__ == "format_map"

    def wrapper(*args: Any, **kwargs: Any) -> str:
        meter = active()
        if is_format_map:
            if kwargs:
                raise TypeError("format_map() takes no keyword arguments")
            if len(args) != 1:
                raise TypeError(f"format_map() takes exactly one argument ({len(args)} given)")
            kwargs, args = args[0], ()
        formatter: _BudgetFormatter
        if isinstance(owner, Markup):
            formatter = _BudgetEscapeFormatter(env, meter, escape=owner.escape)
        else:
            formatter = _BudgetFormatter(env, meter)
        return str_type(formatter.vformat(owner, args, kwargs))

    return update_wrapper(wrapper, value)
