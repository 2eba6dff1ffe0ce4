"""The checks before str, bytes and int methods that can build big values.

Invariant: a method in `STR_METHODS` / `INT_METHODS` is called only after its check has
seen the owner and the arguments and found the result within the budget; the check
returns the arguments to call with (`join` gets its items already collected and ticked,
so a generator is walked once). Methods not listed build nothing bigger than their owner,
and their results are settled by `BudgetedSandbox.call` like every other call's.
"""

from __future__ import annotations

import codecs
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from nudgeflow.engine.sandbox.budget import STRING_LENGTH, BudgetExceeded
from nudgeflow.engine.sandbox.meter import Meter
from nudgeflow.engine.sandbox.sizes import replace_size, text_size

MethodCheck = Callable[[Meter, Any, tuple[Any, ...], dict[str, Any]], tuple[Any, ...]]


def arg(args: Sequence[Any], kwargs: Mapping[str, Any], i: int, name: str, default: Any) -> Any:
    """Argument `i` (positional) or `name` (keyword) of a call, else `default`."""
    return args[i] if len(args) > i else kwargs.get(name, default)


def collect_join(meter: Meter, items: Iterable[Any], separator: int, what: str) -> list[Any]:
    """The items of a join, ticking each, refusing once the joined text would be too long."""
    limit = meter.budget.string_length
    collected: list[Any] = []
    size = -separator
    for item in items:
        meter.tick()
        size += text_size(item, limit) + separator
        if size > limit:
            raise BudgetExceeded(STRING_LENGTH, limit, what=what)
        collected.append(item)
    return collected


def _m_pad(meter: Meter, owner: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    width = args[0] if args else None
    if isinstance(width, int):
        meter.allow_str(max(len(owner), width), "padding")
    return args


def _m_expandtabs(meter: Meter, owner: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    size = arg(args, kwargs, 0, "tabsize", 8)
    if isinstance(size, int):
        tabs = owner.count("\t" if isinstance(owner, str) else b"\t")
        meter.allow_str(len(owner) + tabs * max(size, 0), "expandtabs")
    return args


def _m_join(meter: Meter, owner: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    if len(args) != 1:
        return args
    return (collect_join(meter, args[0], len(owner), "join"),)


def _m_replace(meter: Meter, owner: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    if len(args) >= 2:
        size = replace_size(owner, args[0], args[1], arg(args, kwargs, 2, "count", -1))
        if size is not None:
            meter.allow_str(size, "replace")
    return args


def _m_translate(meter: Meter, owner: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    table = args[0] if args else None
    values: Iterable[Any] = ()
    if isinstance(table, Mapping):
        values = table.values()
    elif isinstance(table, (list, tuple)):
        values = table
    widest = max((len(v) for v in values if isinstance(v, (str, bytes))), default=1)
    meter.allow_str(len(owner) * max(widest, 1), "translate")
    return args


def _m_split(meter: Meter, owner: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    sep = arg(args, kwargs, 0, "sep", None)
    if isinstance(sep, (str, bytes)) and sep and isinstance(sep, type(owner)):
        pieces = owner.count(sep) + 1
        maxsplit = arg(args, kwargs, 1, "maxsplit", -1)
        if isinstance(maxsplit, int) and maxsplit >= 0:
            pieces = min(pieces, maxsplit + 1)
        meter.allow_list(pieces, "split")
    return args


def _m_codec(meter: Meter, owner: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """`encode`/`decode`: the punycode codec is pure Python and quadratic (8,000 distinct
    characters ran for over a minute), so it costs len**2 loop iterations, paid up front."""
    name = arg(args, kwargs, 0, "encoding", "utf-8")
    if isinstance(name, str) and "uny" in name.lower():  # cheap test before the lookup
        try:
            punycode = codecs.lookup(name).name == "punycode"
        except LookupError:
            return args  # the call raises it
        if punycode:
            meter.spend(len(owner) * len(owner), "punycode")
    return args


def _m_to_bytes(meter: Meter, owner: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    length = arg(args, kwargs, 0, "length", 1)
    if isinstance(length, int):
        meter.allow_str(length, "to_bytes")
    return args


STR_METHODS: dict[str, MethodCheck] = {
    "center": _m_pad,
    "ljust": _m_pad,
    "rjust": _m_pad,
    "zfill": _m_pad,
    "expandtabs": _m_expandtabs,
    "join": _m_join,
    "replace": _m_replace,
    "translate": _m_translate,
    "split": _m_split,
    "rsplit": _m_split,
    "encode": _m_codec,
    "decode": _m_codec,
}
INT_METHODS: dict[str, MethodCheck] = {"to_bytes": _m_to_bytes}
