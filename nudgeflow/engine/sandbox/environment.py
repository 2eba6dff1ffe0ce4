"""`BudgetedSandbox`: the immutable sandbox with every render's work under the active meter.

Invariant: every way template code can do work goes through a budgeted hook of this
environment: intercepted binops (operators.py), `call` (methods.py for the str/bytes/int
methods that can build big values, the clock and a settled result for every call),
`str.format` (formatting.py), the filters (filters.py), the `range`/`lipsum` globals below
and the code generator (codegen.py). Renders run inside `run_metered`, except light ones
(light.py), which run with no meter: the few hooks they can reach then check sizes against
`budget`, and a hook a light template cannot reach raises `Unmetered`. A budgeted
operation with no meter therefore never runs unbounded; Jinja's compile-time constant
folding swallows `Unmetered` and leaves the operation to run time.
"""

from __future__ import annotations

import builtins
import sys
from collections.abc import Callable, Mapping
from time import monotonic
from types import BuiltinMethodType, MethodType
from typing import Any

from jinja2 import nodes
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError
from jinja2.utils import generate_lorem_ipsum

from nudgeflow.engine.sandbox.budget import (
    DEFAULT_BUDGET,
    STRING_LENGTH,
    Budget,
    BudgetExceeded,
    Unmetered,
)
from nudgeflow.engine.sandbox.codegen import (
    BudgetCodeGenerator,
    budget_concat,
    budget_container,
    concat_output,
    tick,
    tick_true,
)
from nudgeflow.engine.sandbox.filters import (
    SOFT_FILTERS,
    UNBUDGETED_FILTERS,
    budgeted_filter,
    budgeted_filters,
    light_filter,
)
from nudgeflow.engine.sandbox.formatting import budgeted_str_format
from nudgeflow.engine.sandbox.light import is_light
from nudgeflow.engine.sandbox.meter import active, current, settle_idle
from nudgeflow.engine.sandbox.methods import INT_METHODS, STR_METHODS, MethodCheck
from nudgeflow.engine.sandbox.operators import check_add, check_mul, check_pow, check_printf


def budget_range(*args: int) -> range:
    """`range`, no longer than list_length."""
    rng = range(*args)
    try:
        size = len(rng)
    except OverflowError:
        size = sys.maxsize
    active().allow_list(size, "range")
    return rng


def budget_lipsum(n: int = 5, html: bool = True, min: int = 20, max: int = 100) -> str:
    """`lipsum`, refused when its words could exceed string_length."""
    if isinstance(n, int) and isinstance(max, int):
        active().allow_str(n * builtins.max(max, 1) * 16, "lipsum")
    return generate_lorem_ipsum(n, html, min, max)


class BudgetedSandbox(ImmutableSandboxedEnvironment):
    """The immutable sandbox with every render's work under the active `Meter`.

    Renders run inside `run_metered`, except light ones (`is_light`), which run with no
    meter: the few budget hooks they can reach then check sizes against `budget`, and a
    hook a light template cannot reach raises `Unmetered`. Filters added later go through
    `add_filters`; `light_globals` names globals with a small fixed-size result.
    """

    intercepted_binops = frozenset({"**", "*", "%", "+"})
    code_generator_class = BudgetCodeGenerator
    concat = staticmethod(concat_output)
    budget_tick = staticmethod(tick)
    budget_tick_true = staticmethod(tick_true)
    budget_concat = staticmethod(budget_concat)
    budget_container = staticmethod(budget_container)

    def __init__(self, *args: Any, budget: Budget = DEFAULT_BUDGET, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.budget = budget
        self.light_globals: frozenset[str] = frozenset()
        self.light_filters: set[str] = set(UNBUDGETED_FILTERS | SOFT_FILTERS | {"round"})
        self.filters = budgeted_filters(self.filters, self)
        self.globals["range"] = budget_range
        self.globals["lipsum"] = budget_lipsum

    def budget_str(self, value: Any) -> str:
        """Generated code: output of a value that is not a plain str (numbers, lists,
        Markup); counted under the meter, or checked for size in a light render."""
        text = value if isinstance(value, str) else str(value)
        meter = current()
        if meter is not None:
            return meter.settle(text, "output")
        if len(text) > self.budget.string_length:
            raise BudgetExceeded(STRING_LENGTH, self.budget.string_length, len(text), "output")
        return text

    def add_filters(
        self, filters: Mapping[str, Callable[..., Any]], *, light: bool = False
    ) -> None:
        """Register filters whose results are settled under the budget. `light` ones must
        produce a bounded, non-compounding function of their input (money, dates): light
        templates may use them."""
        for name, func in filters.items():
            if light:
                self.filters[name] = light_filter(func, self)
                self.light_filters.add(name)
            else:
                self.filters[name] = budgeted_filter(func)
                self.light_filters.discard(name)

    def is_light(self, tree: nodes.Template) -> bool:
        """Whether a template does a bounded amount of work with no meter (see is_light)."""
        return is_light(tree, self.light_filters, self.light_globals, self.budget)

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        """`**`, `*`, `%` and `+`, refused when operands or result would be over budget."""
        meter = active()
        if operator == "**":
            check_pow(meter, left, right)
        elif operator == "*":
            check_mul(meter, left, right)
        elif operator == "%":
            check_printf(meter, left, right)
        elif operator == "+":
            check_add(meter, left, right)
        result = self.binop_table[operator](left, right)
        if isinstance(result, (str, bytes, list, tuple)):
            meter.charge(len(result))
        return result

    def call(self, context: Context, obj: Any, /, *args: Any, **kwargs: Any) -> Any:
        """Every call checks the clock; str/bytes/int methods that can build big values
        check their arguments first, and every result is settled."""
        if not self.is_safe_callable(obj):  # as the sandbox's own call
            raise SecurityError(f"{obj!r} is not safely callable")
        check: MethodCheck | None = None
        cls = obj.__class__
        if cls is BuiltinMethodType or cls is MethodType:  # a bound str/bytes/int method?
            owner = obj.__self__
            if isinstance(owner, (str, bytes)):
                check = STR_METHODS.get(obj.__name__)
            elif isinstance(owner, int):
                check = INT_METHODS.get(obj.__name__)
        meter = current()
        if meter is None:
            # a light render (light globals only) or count()/sum() in a `when` expression
            if check is not None:
                raise Unmetered("budgeted method outside a render or evaluation")
            result = context.call(obj, *args, **kwargs)
            if result.__class__ is str and len(result) <= self.budget.string_length:
                return result
            return settle_idle(self.budget, result)
        if monotonic() > meter.deadline:
            raise meter.late()
        if check is not None:
            args = check(meter, obj.__self__, args, kwargs)
        return meter.settle(context.call(obj, *args, **kwargs))

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        """The sandbox's `str.format`/`format_map`, with each field checked before it is
        formatted (`'{:0200000000}'.format(1)` would build 200 MB)."""
        if not isinstance(value, (MethodType, BuiltinMethodType)) or value.__name__ not in (
            "format",
            "format_map",
        ):
            return None
        return budgeted_str_format(self, value)
