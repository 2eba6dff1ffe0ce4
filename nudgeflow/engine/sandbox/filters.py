"""Jinja's filters under the budget: arguments checked, items ticked, results settled.

Invariant: every filter a budgeted environment holds is one of three kinds, and each
kind keeps the budget: *unbudgeted* ones return their input, a part of it or a number;
*soft* and *light* ones (`light_filter`) map their input to a bounded, non-compounding
output, checked for size with or without a meter, so light renders may use them; all
others (`budgeted_filter`) need the meter: they check their arguments first
(`FILTER_CHECKS`), tick per item of their input if they iterate it, and settle their result.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from functools import update_wrapper
from time import monotonic
from typing import Any, Protocol

from jinja2.filters import make_attrgetter, sync_do_join
from jinja2.nodes import EvalContext
from jinja2.utils import _PassArg, pass_eval_context

from nudgeflow.engine.sandbox.budget import INT_BITS, Budget, BudgetExceeded, Unmetered
from nudgeflow.engine.sandbox.meter import Meter, active, current, settle_idle, ticking
from nudgeflow.engine.sandbox.methods import arg, collect_join
from nudgeflow.engine.sandbox.sizes import (
    layout_size,
    line_count,
    printf_size,
    replace_size,
    text_size,
)

FilterCheck = Callable[[Meter, Any, tuple[Any, ...], dict[str, Any]], None]


class Budgeted(Protocol):
    """What a light filter reads its budget from when no meter runs (the environment)."""

    budget: Budget


def _f_center(meter: Meter, value: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    width = arg(args, kwargs, 0, "width", 80)
    size = text_size(value, meter.budget.string_length)
    meter.allow_str(max(size, width) if isinstance(width, int) else size, "center")


def _f_indent(meter: Meter, value: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    width = arg(args, kwargs, 0, "width", 4)
    unit = len(width) if isinstance(width, str) else width if isinstance(width, int) else 0
    size = text_size(value, meter.budget.string_length)
    lines = line_count(value) if isinstance(value, str) else size + 1
    meter.allow_str(size + 1 + lines * max(unit, 0), "indent")


def _f_wordwrap(meter: Meter, value: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    if not isinstance(value, str):
        return
    width = arg(args, kwargs, 0, "width", 79)
    wrapstring = arg(args, kwargs, 2, "wrapstring", None)
    unit = len(wrapstring) if isinstance(wrapstring, str) else 1
    step = width if isinstance(width, int) and width > 0 else 1
    breaks = value.count(" ") + value.count("-") + value.count("\t") + line_count(value)
    lines = min(len(value) + 1, len(value) // step + 2 * breaks + 1)
    meter.allow_str(len(value) + lines * unit, "wordwrap")


def _f_format(meter: Meter, value: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    fmt = value if isinstance(value, str) else str(value)
    meter.allow_str(printf_size(fmt, kwargs or args, meter.budget.string_length), "format")


def _f_replace(meter: Meter, value: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    if len(args) >= 2:
        count = arg(args, kwargs, 2, "count", None)
        size = replace_size(str(value), str(args[0]), str(args[1]), count)
        if size is not None:
            meter.allow_str(size, "replace")


def _f_urlize(meter: Meter, value: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    text = value if isinstance(value, str) else str(value)
    limit = meter.budget.string_length
    extra = sum(
        text_size(arg(args, kwargs, i, n, None), limit) for i, n in ((2, "target"), (3, "rel"))
    )
    words = text.count(" ") + line_count(text)
    links = min(words, text.count(".") + text.count("@") + text.count(":"))
    meter.allow_str(2 * len(text) + links * (64 + extra), "urlize")


def _f_tojson(meter: Meter, value: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    indent = arg(args, kwargs, 0, "indent", None)
    if indent is not None:
        step = len(indent) if isinstance(indent, str) else indent if isinstance(indent, int) else 0
        limit = meter.budget.string_length
        meter.allow_str(layout_size(value, limit, max(step, 0)), "tojson")


def _f_pprint(meter: Meter, value: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    meter.allow_str(layout_size(value, meter.budget.string_length, None), "pprint")


def _f_batch(meter: Meter, value: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    count = arg(args, kwargs, 0, "linecount", None)
    if isinstance(count, int):
        meter.allow_list(count, "batch")


def _f_slice(meter: Meter, value: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    count = arg(args, kwargs, 0, "slices", None)
    if isinstance(count, int):
        meter.allow_list(count, "slice")


FILTER_CHECKS: dict[str, FilterCheck] = {
    "batch": _f_batch,
    "center": _f_center,
    "format": _f_format,
    "indent": _f_indent,
    "pprint": _f_pprint,
    "replace": _f_replace,
    "slice": _f_slice,
    "tojson": _f_tojson,
    "urlize": _f_urlize,
    "wordwrap": _f_wordwrap,
}
# Return their input, a part of it, or a number: nothing to check, and the hot ones
# (`default`, `length`) stay as fast as before. (`round` returns a number too, but its
# precision is checked first: `light_round`.)
UNBUDGETED_FILTERS = frozenset(
    {"abs", "attr", "count", "d", "default", "first", "float", "last", "length", "random"}
)
_BITS_PER_DIGIT = 3.3219280948873626  # log2(10)
# Map a string to a bounded, non-compounding function of it (at most a few times longer,
# and applying them again does not grow it further: `e` on Markup is a no-op): a light
# template or expression may use them with no meter, their results checked for size.
SOFT_FILTERS = frozenset(
    {
        "capitalize", "e", "escape", "lower", "safe", "string", "striptags", "title", "trim",
        "upper", "wordcount",
    }
)  # fmt: skip
# Walk their input: each item costs a loop iteration.
ITERATING_FILTERS = frozenset(
    {
        "batch", "groupby", "list", "map", "max", "min", "reject", "rejectattr", "select",
        "selectattr", "slice", "sort", "sum", "unique",
    }
)  # fmt: skip


def budgeted_filter(
    func: Callable[..., Any], *, check: FilterCheck | None = None, iterates: bool = False
) -> Callable[..., Any]:
    """`func` as a filter that checks its arguments (`check`), ticks per item of its input
    (`iterates`) and settles its result; keeps Jinja's pass_context/eval_context marks."""
    at = 0 if _PassArg.from_obj(func) is None else 1

    if check is None and not iterates:  # only the result to settle: keep it short

        def budgeted(*args: Any, **kwargs: Any) -> Any:
            meter = current()
            if meter is None:
                raise Unmetered("budgeted filter outside a render or evaluation")
            if monotonic() > meter.deadline:
                raise meter.late()
            return meter.settle(func(*args, **kwargs))

    else:

        def budgeted(*args: Any, **kwargs: Any) -> Any:
            meter = active()
            meter.check_time()
            if len(args) > at:
                if check is not None:
                    check(meter, args[at], args[at + 1 :], kwargs)
                if iterates:
                    args = (*args[:at], ticking(args[at], meter), *args[at + 1 :])
            return meter.settle(func(*args, **kwargs))

    update_wrapper(budgeted, func)
    return budgeted


def light_filter(func: Callable[..., Any], env: Budgeted) -> Callable[..., Any]:
    """`func` as a filter whose output is a bounded, non-compounding function of its input
    (money, dates): settled under the meter, or checked for size in a light render."""

    def budgeted(*args: Any, **kwargs: Any) -> Any:
        result = func(*args, **kwargs)  # bounded by its input: check afterwards
        meter = current()
        if meter is None:  # a light render
            if result.__class__ is str and len(result) <= env.budget.string_length:
                return result
            return settle_idle(env.budget, result)
        if monotonic() > meter.deadline:
            raise meter.late()
        return meter.settle(result)

    update_wrapper(budgeted, func)
    return budgeted


def light_round(func: Callable[..., Any], env: Budgeted) -> Callable[..., Any]:
    """Jinja's `round`, its precision checked first: `5|round(-10**9)` is one C call
    computing 10 ** 10**9 (`round(int, -n)`, and `value * 10**n` for ceil/floor) that
    holds the GIL for minutes. The result is a number; light renders may use it."""

    def budgeted(value: Any, precision: Any = 0, method: Any = "common") -> Any:
        if isinstance(precision, int) and precision:
            meter = current()
            limit = (env.budget if meter is None else meter.budget).int_bits
            bits = int(abs(precision) * _BITS_PER_DIGIT) + 1
            if bits > limit:
                raise BudgetExceeded(INT_BITS, limit, bits, "round")
        return func(value, precision, method)

    update_wrapper(budgeted, func)
    return budgeted


@pass_eval_context
def _join_filter(
    eval_ctx: EvalContext, value: Iterable[Any], d: str = "", attribute: str | int | None = None
) -> str:
    """Jinja's `join`, collecting the items under the budget before joining them."""
    meter = active()
    meter.check_time()
    if attribute is not None:
        value = map(make_attrgetter(eval_ctx.environment, attribute), value)
    items = collect_join(meter, value, text_size(d, meter.budget.string_length), "join")
    return meter.settle(sync_do_join(eval_ctx, items, d))


def budgeted_filters(
    filters: Mapping[str, Callable[..., Any]], env: Budgeted
) -> dict[str, Callable[..., Any]]:
    """Jinja's filters with their budget checks."""
    result: dict[str, Callable[..., Any]] = {}
    for name, func in filters.items():
        if name in UNBUDGETED_FILTERS:
            result[name] = func
        elif name == "round":
            result[name] = light_round(func, env)
        elif name in SOFT_FILTERS:
            result[name] = light_filter(func, env)
        elif name == "join":
            result[name] = _join_filter
        else:
            check = FILTER_CHECKS.get(name)
            result[name] = budgeted_filter(func, check=check, iterates=name in ITERATING_FILTERS)
    return result
