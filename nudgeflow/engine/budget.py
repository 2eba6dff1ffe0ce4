"""Budgets for template renders and `when` expressions: loops, sizes, output, wall time.

The immutable sandbox keeps templates away from Python internals, not from the worker's CPU
and memory: `{{ (((10**64)**64)**64)**64 }}` ran for 25 s, two nested loops over
`range(user.n)` for 4 s, and `{{ '%0200000000d' % 1 }}` built 200 MB in a tenth of a second.
So every render and every expression evaluation runs under a `Budget` that template content
cannot switch off (the limits are `Budget` fields; defaults below):

- ``loop_iterations``: iterations of every `{% for %}` (and of its `if` filter) plus the items
  that iterating filters (`map`, `select`, `list`, `join`, `sort`, ...) walk, summed over the
  whole render, so nesting multiplies nothing;
- ``string_length`` / ``list_length`` / ``int_bits``: checked *before* an operation that could
  build a big value, from its operands (`**`, `*`, `%`, `+`, `~`, `str.format`, `center`,
  `ljust`, `rjust`, `zfill`, `expandtabs`, `join`, `replace`, `translate`, `split`, `indent`,
  `wordwrap`, `format`, `urlize`, `tojson`, `pprint`, `batch`, `slice`, `range`, `lipsum`),
  and again on every filter and call result. A list or dict also counts against
  string_length by the text it would print as, so shared references cannot multiply it;
- ``built_chars``: characters created over the whole render, so a million strings each under
  the string limit cannot add up to gigabytes held in a list or a captured block;
- ``output_length``: the rendered text, and each captured block (`{% set %}`, macro, filter);
- ``wall_time_ms``: checked at each iteration, call, filter application and format field.

Over budget raises `BudgetExceeded`, whose message names the limit ("budget exceeded:
loop_iterations > 100000"); templates.py turns it into a TemplateError with that reason and
`limit`, expressions.py into a false condition with that reason (`limit_of` reads it back).

How: `BudgetedSandbox` is an ImmutableSandboxedEnvironment whose intercepted binops, `call`,
`str.format` wrapper, filters, `range`/`lipsum` globals and code generator (a tick at the top
of every loop body; checked `~`, list/tuple/dict displays and output) consult the `Meter` of
the render in progress. The meter lives in a context variable, so concurrent renders never
share one. A budgeted operation with no meter raises `Unmetered` instead of running
unbounded; Jinja's compile-time constant folding swallows that and leaves it to run time.

Light templates (`is_light`: straight-line, nothing that builds big values, a few outputs,
which is what a notification usually is) render with no meter at all, so budgets cost them
nothing measurable: they cannot loop or build more than built_chars, the hooks they can
reach check sizes against the environment's budget, and their output is still checked.
The same holds for `when` expressions made only of names, comparisons and count()/sum().
"""

from __future__ import annotations

import builtins
import math
import re
import sys
from collections.abc import (
    Callable,
    Container,
    ItemsView,
    Iterable,
    Iterator,
    KeysView,
    Mapping,
    Sequence,
    ValuesView,
)
from contextvars import ContextVar
from dataclasses import dataclass, fields
from functools import update_wrapper
from itertools import chain, islice
from time import monotonic
from types import BuiltinMethodType, MethodType
from typing import Any, ParamSpec, TypeVar

from jinja2 import nodes
from jinja2.compiler import CodeGenerator, Frame, optimizeconst
from jinja2.environment import TemplateModule
from jinja2.filters import make_attrgetter, sync_do_join
from jinja2.nodes import EvalContext
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment, SandboxedFormatter, SecurityError
from jinja2.utils import Namespace, _PassArg, generate_lorem_ipsum, pass_eval_context
from markupsafe import EscapeFormatter, Markup

T = TypeVar("T")
P = ParamSpec("P")

LOOP_ITERATIONS = "loop_iterations"
STRING_LENGTH = "string_length"
LIST_LENGTH = "list_length"
INT_BITS = "int_bits"
OUTPUT_LENGTH = "output_length"
BUILT_CHARS = "built_chars"
WALL_TIME_MS = "wall_time_ms"


@dataclass(frozen=True, slots=True)
class Budget:
    """Limits for one render or one `when` evaluation; the defaults fit any real message
    (an email is well under 100 KB) with a wide margin, and stop an attack in milliseconds."""

    loop_iterations: int = 100_000
    """Loop iterations plus items walked by iterating filters, over the whole render."""
    string_length: int = 1_000_000
    """Characters in any one string, and in the text any one list or dict prints as."""
    list_length: int = 100_000
    """Items in any one list, tuple, dict or range."""
    int_bits: int = 4_096
    """Bits in any one integer (about 1,233 decimal digits)."""
    output_length: int = 1_000_000
    """Characters rendered, and in any one captured block (set block, macro, filter block)."""
    built_chars: int = 10_000_000
    """Characters created over the whole render (about 40 MB at worst)."""
    wall_time_ms: int = 250
    """Wall-clock time for the whole render or evaluation."""

    def __post_init__(self) -> None:
        for field in fields(self):
            value = getattr(self, field.name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"budget {field.name} must be a positive integer, got {value!r}")


DEFAULT_BUDGET = Budget()
LIMITS = frozenset(field.name for field in fields(Budget))
_PREFIX = "budget exceeded: "
_LIMIT_RE = re.compile(r"budget exceeded: ([a-z_]+) > ")


class BudgetExceeded(Exception):
    """A render or evaluation went over `limit` (a `Budget` field name).

    Deliberately not a ValueError or TypeError: Jinja swallows those in places (`|int`
    returns its default), and a budget must never be swallowed.
    """

    def __init__(self, limit: str, maximum: int, needed: int | None = None, what: str = "") -> None:
        if what and needed is not None:
            detail = f" ({what} needs {needed})"
        elif what:
            detail = f" ({what})"
        elif needed is not None:
            detail = f" (needs {needed})"
        else:
            detail = ""
        super().__init__(f"{_PREFIX}{limit} > {maximum}{detail}")
        self.limit = limit
        self.maximum = maximum
        self.needed = needed
        self.what = what


class Unmetered(RuntimeError):
    """A budgeted operation ran with no render or evaluation in progress (for instance when
    Jinja tries to fold a constant at compile time): refused rather than run unbounded."""


def limit_of(reason: str | None) -> str | None:
    """The limit a failure reason names if it is a budget failure, else None; for the
    engine's decision (a `when` expression reports failures as a reason string)."""
    if reason is None:
        return None
    match = _LIMIT_RE.match(reason)
    return match.group(1) if match is not None and match.group(1) in LIMITS else None


# --- the meter of the render in progress --------------------------------------------------


class Meter:
    """What is left of one render's budget. Cheap to create: one per render."""

    __slots__ = ("budget", "built_left", "deadline", "iterations_left", "string_length")

    def __init__(self, budget: Budget) -> None:
        self.budget = budget
        self.string_length = budget.string_length
        self.iterations_left = budget.loop_iterations
        self.built_left = budget.built_chars
        self.deadline = monotonic() + budget.wall_time_ms / 1000

    def tick(self) -> None:
        """One loop iteration (or one item walked by a filter); also checks the clock."""
        self.iterations_left -= 1
        if self.iterations_left < 0:
            raise BudgetExceeded(LOOP_ITERATIONS, self.budget.loop_iterations)
        if monotonic() > self.deadline:
            raise BudgetExceeded(WALL_TIME_MS, self.budget.wall_time_ms)

    def check_time(self) -> None:
        if monotonic() > self.deadline:
            raise BudgetExceeded(WALL_TIME_MS, self.budget.wall_time_ms)

    def late(self) -> BudgetExceeded:
        return BudgetExceeded(WALL_TIME_MS, self.budget.wall_time_ms)

    def charge(self, chars: int) -> None:
        """Count characters (or items) just created against built_chars."""
        self.built_left -= chars
        if self.built_left < 0:
            raise BudgetExceeded(BUILT_CHARS, self.budget.built_chars)

    def allow_str(self, size: int, what: str) -> None:
        if size > self.budget.string_length:
            raise BudgetExceeded(STRING_LENGTH, self.budget.string_length, size, what)

    def allow_list(self, size: int, what: str) -> None:
        if size > self.budget.list_length:
            raise BudgetExceeded(LIST_LENGTH, self.budget.list_length, size, what)

    def allow_bits(self, bits: int, what: str) -> None:
        if bits > self.budget.int_bits:
            raise BudgetExceeded(INT_BITS, self.budget.int_bits, bits, what)

    def check_container(self, value: Any, what: str) -> None:
        """A list, tuple, dict or set: its length, and the text it would print as."""
        size = len(value)
        self.allow_list(size, what)
        self.allow_str(text_size(value, self.budget.string_length), what)
        self.charge(size)

    def settle(self, value: T, what: str = "result") -> T:
        """Check (and charge) a value some filter or call just produced."""
        if value.__class__ is str:  # the common case, kept short
            size = len(value)  # type: ignore[arg-type]
            if size > self.string_length:
                raise BudgetExceeded(STRING_LENGTH, self.string_length, size, what)
            self.built_left -= size
            if self.built_left < 0:
                raise BudgetExceeded(BUILT_CHARS, self.budget.built_chars)
        elif isinstance(value, (str, bytes)):
            size = len(value)
            self.allow_str(size, what)
            self.charge(size)
        elif isinstance(value, int):
            self.allow_bits(value.bit_length(), what)
        elif isinstance(value, (list, tuple, dict, set, frozenset)):
            self.check_container(value, what)
        return value


_ACTIVE: ContextVar[Meter | None] = ContextVar("nudgeflow_budget_meter", default=None)


def settle_idle(budget: Budget, value: T, what: str = "result") -> T:
    """`Meter.settle` without a meter (a light render): sizes only, nothing to count."""
    if isinstance(value, (str, bytes)):  # a tuple: faster than a union
        if len(value) > budget.string_length:
            raise BudgetExceeded(STRING_LENGTH, budget.string_length, len(value), what)
    elif isinstance(value, int):
        if value.bit_length() > budget.int_bits:
            raise BudgetExceeded(INT_BITS, budget.int_bits, value.bit_length(), what)
    elif isinstance(value, (list, tuple, dict, set, frozenset)):
        if len(value) > budget.list_length:
            raise BudgetExceeded(LIST_LENGTH, budget.list_length, len(value), what)
        size = text_size(value, budget.string_length)
        if size > budget.string_length:
            raise BudgetExceeded(STRING_LENGTH, budget.string_length, size, what)
    return value


def active() -> Meter:
    """The meter of the render or evaluation in progress."""
    meter = _ACTIVE.get()
    if meter is None:
        raise Unmetered("budgeted operation outside a render or evaluation")
    return meter


def run_metered(budget: Budget, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
    """Call `fn` under a fresh meter for `budget` (one render or one evaluation)."""
    token = _ACTIVE.set(Meter(budget))
    try:
        return fn(*args, **kwargs)
    finally:
        _ACTIVE.reset(token)


def ticking(iterable: Iterable[T], meter: Meter) -> Iterator[T]:
    """`iterable`, costing one loop iteration per item."""
    tick = meter.tick
    for item in iterable:
        tick()
        yield item


# --- sizes --------------------------------------------------------------------------------

_SEQUENCES = (list, tuple, set, frozenset, KeysView, ValuesView)
_MAPPINGS = (dict, Mapping, ItemsView)


def _leaf_size(item: Any) -> int:
    """About len(repr(item)) inside a container, for anything that holds no other values."""
    if isinstance(item, str):
        return len(item) + 2
    if item is None or isinstance(item, bool):
        return 5
    if isinstance(item, int):
        return item.bit_length() // 3 + 2
    if isinstance(item, float):
        return 24
    if isinstance(item, (bytes, bytearray)):
        return 4 * len(item) + 3
    if isinstance(item, TemplateModule):  # prints as everything it rendered
        return sum(map(len, item._body_stream))
    return 64


_CONTAINERS = (*_SEQUENCES, *_MAPPINGS, Namespace)
_LEAVES = frozenset({str, int, float, bool, type(None), bytes, Markup})


def _is_container(item: Any) -> bool:
    cls = item.__class__
    if cls in _LEAVES:  # exact types first: the ABCs in _CONTAINERS are slow to test
        return False
    return cls is list or cls is dict or cls is tuple or isinstance(item, _CONTAINERS)


def _overhead(item: Any) -> int:
    if isinstance(item, Namespace):
        return 13
    return 2 + (4 if isinstance(item, _MAPPINGS) else 2) * len(item)


def _children(item: Any) -> Iterable[Any]:
    if isinstance(item, Namespace):
        return (object.__getattribute__(item, "_Namespace__attrs"),)
    if isinstance(item, ItemsView):
        item = getattr(item, "mapping", None) or getattr(item, "_mapping", {})
    if isinstance(item, (dict, Mapping)):
        return chain(item.keys(), item.values())
    return item


def shape(value: Any, limit: int) -> tuple[int, int, int, int]:
    """(text size, items, depth, widest key) of `value` as it would print; the size is about
    len(str(value)). Each distinct container is measured once, so lists sharing references
    (`[a, a]` nested sixty deep) cost as little as they hold, and the walk stops once the
    size passes `limit` (a cycle counts as past it)."""
    if not _is_container(value):
        return (len(value) if isinstance(value, str) else _leaf_size(value)), 1, 0, 0
    memo: dict[int, tuple[int, int, int, int]] = {}
    keep: list[Any] = []  # measured containers stay alive, so their ids stay theirs
    path: set[int] = set()
    stack: list[tuple[Any, bool]] = [(value, False)]
    while stack:
        item, measured = stack.pop()
        key = id(item)
        if not measured:
            if key in memo:
                continue
            if key in path:
                return limit + 1, 1, 0, 0
            overhead = _overhead(item)
            if overhead > limit:
                return overhead, 1, 0, 0
            path.add(key)
            stack.append((item, True))
            stack.extend(
                (child, False)
                for child in _children(item)
                if _is_container(child) and id(child) not in memo
            )
            continue
        path.discard(key)
        size, count, depth, widest = _overhead(item), 1, 0, 0
        keys = isinstance(item, _MAPPINGS)
        width = len(item) if keys else 0
        for i, child in enumerate(_children(item)):
            if _is_container(child):
                child_size, child_count, child_depth, child_widest = memo[id(child)]
            else:
                child_size, child_count, child_depth, child_widest = _leaf_size(child), 1, 0, 0
            if i < width:  # a key
                child_widest = max(child_widest, child_size)
            size += child_size
            count += child_count
            depth = max(depth, child_depth + 1)
            widest = max(widest, child_widest)
            if size > limit:
                return size, count, depth, widest
        memo[key] = (size, count, depth, widest)
        keep.append(item)
    return memo[id(value)]


def text_size(value: Any, limit: int) -> int:
    """About len(str(value)) without building it; stops once past `limit`."""
    if isinstance(value, str):
        return len(value)
    if not _is_container(value):
        return _leaf_size(value)
    return shape(value, limit)[0]


def layout_size(value: Any, limit: int, step: int | None) -> int:
    """Upper bound on `value` laid out one item per line: indented by `step` per level
    (json.dumps with indent), or by the widest key plus its punctuation (pprint) if None."""
    size, count, depth, widest = shape(value, limit)
    per_level = (widest + 4) if step is None else step
    return size + count * (depth * per_level + 2)


def _number_size(value: Any) -> int:
    """Characters a number formats to in any base with any flags, before width/precision."""
    if isinstance(value, int):
        return value.bit_length() // 3 + 8
    return 330  # a float: %f of 1e308 has 309 digits


def _digits(text: str | None) -> int:
    if not text:
        return 0
    return int(text) if len(text) <= 18 else 10**18


def _printf_number(fmt: str, i: int, args: Sequence[Any], used: int) -> tuple[int, int, int]:
    """Width or precision at fmt[i]: digits or `*` (taken from args); (value, i, used)."""
    if i < len(fmt) and fmt[i] == "*":
        value = args[used] if used < len(args) else 0
        return (abs(value) if isinstance(value, int) else 0), i + 1, used + 1
    j = i
    while j < len(fmt) and "0" <= fmt[j] <= "9":
        j += 1
    return _digits(fmt[i:j]), j, used


def printf_size(fmt: str | bytes, args: Any, limit: int) -> int:
    """Upper bound on len(fmt % args), reading widths, precisions and values as Python's
    printf-style formatting does; stops once past `limit`."""
    text = fmt.decode("latin-1") if isinstance(fmt, bytes) else fmt
    positional: Sequence[Any] = args if isinstance(args, tuple) else (args,)
    mapping = args if isinstance(args, Mapping) else None
    total = len(text)
    used = 0
    i = text.find("%")
    while i >= 0 and total <= limit:
        i += 1
        key: str | None = None
        if i < len(text) and text[i] == "(":
            depth, j = 1, i + 1
            while j < len(text) and depth:
                depth += {"(": 1, ")": -1}.get(text[j], 0)
                j += 1
            key, i = text[i + 1 : j - 1], j
        while i < len(text) and text[i] in "-+ #0":
            i += 1
        width, i, used = _printf_number(text, i, positional, used)
        precision = 0
        if i < len(text) and text[i] == ".":
            precision, i, used = _printf_number(text, i + 1, positional, used)
        while i < len(text) and text[i] in "hlL":
            i += 1
        if i >= len(text):
            break
        conversion = text[i]
        if conversion == "%":
            total += max(width, 1)
        else:
            if key is not None:
                value = mapping.get(key) if mapping is not None else None
            else:
                value = positional[used] if used < len(positional) else None
                used += 1
            if conversion in "sra":
                size = text_size(value, limit)
                if conversion != "s" and isinstance(value, str):
                    size = 10 * size + 2  # repr/ascii escapes
            else:
                size = _number_size(value) + precision
            total += max(width, size)
        i = text.find("%", i + 1)
    return total


_FORMAT_SPEC = re.compile(r"(?:.?[<>=^])?[-+ ]?z?#?0?(\d*)[,_]?(?:\.(\d*))?[a-zA-Z%]?", re.DOTALL)


def spec_size(value: Any, spec: str, limit: int) -> int:
    """Upper bound on len(format(value, spec)) for str.format fields."""
    numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
    base = _number_size(value) * 4 // 3 + 8 if numeric else text_size(value, limit)
    if not spec:
        return base
    match = _FORMAT_SPEC.fullmatch(spec)
    if match is None:  # a type's own mini-language, such as datetime's strftime codes
        return base + 16 * len(spec)
    return max(_digits(match.group(1)), base + _digits(match.group(2)))


# --- operators ----------------------------------------------------------------------------


def _check_pow(meter: Meter, base: Any, exponent: Any) -> None:
    if isinstance(base, int):
        meter.allow_bits(base.bit_length(), "**")
    if isinstance(exponent, int):
        meter.allow_bits(exponent.bit_length(), "**")
    if isinstance(base, int) and isinstance(exponent, int) and exponent > 1 and abs(base) > 1:
        if exponent > meter.budget.int_bits:  # |base| >= 2: at least `exponent` bits
            raise BudgetExceeded(INT_BITS, meter.budget.int_bits, exponent, "**")
        meter.allow_bits(math.ceil(exponent * math.log2(abs(base))), "**")


def _check_mul(meter: Meter, left: Any, right: Any) -> None:
    if isinstance(left, int) and isinstance(right, int):
        meter.allow_bits(left.bit_length() + right.bit_length(), "*")
        return
    for seq, times in ((left, right), (right, left)):
        if not isinstance(times, int) or times <= 0:
            continue
        if isinstance(seq, (str, bytes)):
            meter.allow_str(len(seq) * times, "*")
        elif isinstance(seq, (list, tuple)):
            meter.allow_list(len(seq) * times, "*")
            if seq:
                meter.allow_str(text_size(seq, meter.budget.string_length) * times, "*")


def _check_add(meter: Meter, left: Any, right: Any) -> None:
    if isinstance(left, int) and isinstance(right, int):
        meter.allow_bits(max(left.bit_length(), right.bit_length()) + 1, "+")
    elif isinstance(left, (str, bytes)) and isinstance(right, (str, bytes)):
        meter.allow_str(len(left) + len(right), "+")
    elif isinstance(left, (list, tuple)) and isinstance(right, (list, tuple)):
        meter.allow_list(len(left) + len(right), "+")
        limit = meter.budget.string_length
        meter.allow_str(text_size(left, limit) + text_size(right, limit), "+")


# --- str, bytes and int methods -----------------------------------------------------------

_MethodCheck = Callable[[Meter, Any, tuple[Any, ...], dict[str, Any]], tuple[Any, ...]]
_LINE_BREAKS = "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"


def _arg(args: Sequence[Any], kwargs: Mapping[str, Any], i: int, name: str, default: Any) -> Any:
    return args[i] if len(args) > i else kwargs.get(name, default)


def _line_count(text: str) -> int:
    return sum(map(text.count, _LINE_BREAKS)) + 1


def _collect_join(meter: Meter, items: Iterable[Any], separator: int, what: str) -> list[Any]:
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


def _replace_size(text: Any, old: Any, new: Any, count: Any) -> int | None:
    kind = str if isinstance(text, str) else bytes if isinstance(text, bytes) else None
    if kind is None or not isinstance(old, kind) or not isinstance(new, kind):
        return None
    hits = text.count(old) if old else len(text) + 1
    if isinstance(count, int) and count >= 0:
        hits = min(hits, count)
    return len(text) + hits * max(len(new) - len(old), 0)


def _m_pad(meter: Meter, owner: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    width = args[0] if args else None
    if isinstance(width, int):
        meter.allow_str(max(len(owner), width), "padding")
    return args


def _m_expandtabs(meter: Meter, owner: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    size = _arg(args, kwargs, 0, "tabsize", 8)
    if isinstance(size, int):
        tabs = owner.count("\t" if isinstance(owner, str) else b"\t")
        meter.allow_str(len(owner) + tabs * max(size, 0), "expandtabs")
    return args


def _m_join(meter: Meter, owner: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    if len(args) != 1:
        return args
    return (_collect_join(meter, args[0], len(owner), "join"),)


def _m_replace(meter: Meter, owner: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    if len(args) >= 2:
        size = _replace_size(owner, args[0], args[1], _arg(args, kwargs, 2, "count", -1))
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
    sep = _arg(args, kwargs, 0, "sep", None)
    if isinstance(sep, (str, bytes)) and sep and isinstance(sep, type(owner)):
        pieces = owner.count(sep) + 1
        maxsplit = _arg(args, kwargs, 1, "maxsplit", -1)
        if isinstance(maxsplit, int) and maxsplit >= 0:
            pieces = min(pieces, maxsplit + 1)
        meter.allow_list(pieces, "split")
    return args


def _m_to_bytes(meter: Meter, owner: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    length = _arg(args, kwargs, 0, "length", 1)
    if isinstance(length, int):
        meter.allow_str(length, "to_bytes")
    return args


_STR_METHODS: dict[str, _MethodCheck] = {
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
}
_INT_METHODS: dict[str, _MethodCheck] = {"to_bytes": _m_to_bytes}


# --- filters ------------------------------------------------------------------------------

_FilterCheck = Callable[[Meter, Any, tuple[Any, ...], dict[str, Any]], None]


def _f_center(meter: Meter, value: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    width = _arg(args, kwargs, 0, "width", 80)
    size = text_size(value, meter.budget.string_length)
    meter.allow_str(max(size, width) if isinstance(width, int) else size, "center")


def _f_indent(meter: Meter, value: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    width = _arg(args, kwargs, 0, "width", 4)
    unit = len(width) if isinstance(width, str) else width if isinstance(width, int) else 0
    size = text_size(value, meter.budget.string_length)
    lines = _line_count(value) if isinstance(value, str) else size + 1
    meter.allow_str(size + 1 + lines * max(unit, 0), "indent")


def _f_wordwrap(meter: Meter, value: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    if not isinstance(value, str):
        return
    width = _arg(args, kwargs, 0, "width", 79)
    wrapstring = _arg(args, kwargs, 2, "wrapstring", None)
    unit = len(wrapstring) if isinstance(wrapstring, str) else 1
    step = width if isinstance(width, int) and width > 0 else 1
    breaks = value.count(" ") + value.count("-") + value.count("\t") + _line_count(value)
    lines = min(len(value) + 1, len(value) // step + 2 * breaks + 1)
    meter.allow_str(len(value) + lines * unit, "wordwrap")


def _f_format(meter: Meter, value: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    fmt = value if isinstance(value, str) else str(value)
    meter.allow_str(printf_size(fmt, kwargs or args, meter.budget.string_length), "format")


def _f_replace(meter: Meter, value: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    if len(args) >= 2:
        count = _arg(args, kwargs, 2, "count", None)
        size = _replace_size(str(value), str(args[0]), str(args[1]), count)
        if size is not None:
            meter.allow_str(size, "replace")


def _f_urlize(meter: Meter, value: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    text = value if isinstance(value, str) else str(value)
    limit = meter.budget.string_length
    extra = sum(
        text_size(_arg(args, kwargs, i, n, None), limit) for i, n in ((2, "target"), (3, "rel"))
    )
    words = text.count(" ") + _line_count(text)
    links = min(words, text.count(".") + text.count("@") + text.count(":"))
    meter.allow_str(2 * len(text) + links * (64 + extra), "urlize")


def _f_tojson(meter: Meter, value: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    indent = _arg(args, kwargs, 0, "indent", None)
    if indent is not None:
        step = len(indent) if isinstance(indent, str) else indent if isinstance(indent, int) else 0
        limit = meter.budget.string_length
        meter.allow_str(layout_size(value, limit, max(step, 0)), "tojson")


def _f_pprint(meter: Meter, value: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    meter.allow_str(layout_size(value, meter.budget.string_length, None), "pprint")


def _f_batch(meter: Meter, value: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    count = _arg(args, kwargs, 0, "linecount", None)
    if isinstance(count, int):
        meter.allow_list(count, "batch")


def _f_slice(meter: Meter, value: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    count = _arg(args, kwargs, 0, "slices", None)
    if isinstance(count, int):
        meter.allow_list(count, "slice")


_FILTER_CHECKS: dict[str, _FilterCheck] = {
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
# (`default`, `length`) stay as fast as before.
_UNBUDGETED_FILTERS = frozenset(
    {"abs", "attr", "count", "d", "default", "first", "float", "last", "length", "random", "round"}
)
# Map a string to a bounded, non-compounding function of it (at most a few times longer,
# and applying them again does not grow it further: `e` on Markup is a no-op): a light
# template or expression may use them with no meter, their results checked for size.
_SOFT_FILTERS = frozenset(
    {
        "capitalize", "e", "escape", "lower", "safe", "string", "striptags", "title", "trim",
        "upper", "wordcount",
    }
)  # fmt: skip
# Walk their input: each item costs a loop iteration.
_ITERATING_FILTERS = frozenset(
    {
        "batch", "groupby", "list", "map", "max", "min", "reject", "rejectattr", "select",
        "selectattr", "slice", "sort", "sum", "unique",
    }
)  # fmt: skip


def budgeted_filter(
    func: Callable[..., Any], *, check: _FilterCheck | None = None, iterates: bool = False
) -> Callable[..., Any]:
    """`func` as a filter that checks its arguments (`check`), ticks per item of its input
    (`iterates`) and settles its result; keeps Jinja's pass_context/eval_context marks."""
    at = 0 if _PassArg.from_obj(func) is None else 1

    if check is None and not iterates:  # only the result to settle: keep it short

        def budgeted(*args: Any, **kwargs: Any) -> Any:
            meter = _ACTIVE.get()
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


def light_filter(func: Callable[..., Any], env: BudgetedSandbox) -> Callable[..., Any]:
    """`func` as a filter whose output is a bounded, non-compounding function of its input
    (money, dates): settled under the meter, or checked for size in a light render."""

    def budgeted(*args: Any, **kwargs: Any) -> Any:
        result = func(*args, **kwargs)  # bounded by its input: check afterwards
        meter = _ACTIVE.get()
        if meter is None:  # a light render
            if result.__class__ is str and len(result) <= env.budget.string_length:
                return result
            return settle_idle(env.budget, result)
        if monotonic() > meter.deadline:
            raise meter.late()
        return meter.settle(result)

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
    items = _collect_join(meter, value, text_size(d, meter.budget.string_length), "join")
    return meter.settle(sync_do_join(eval_ctx, items, d))


def budgeted_filters(
    filters: Mapping[str, Callable[..., Any]], env: BudgetedSandbox
) -> dict[str, Callable[..., Any]]:
    """Jinja's filters with their budget checks."""
    result: dict[str, Callable[..., Any]] = {}
    for name, func in filters.items():
        if name in _UNBUDGETED_FILTERS:
            result[name] = func
        elif name in _SOFT_FILTERS:
            result[name] = light_filter(func, env)
        elif name == "join":
            result[name] = _join_filter
        else:
            check = _FILTER_CHECKS.get(name)
            result[name] = budgeted_filter(func, check=check, iterates=name in _ITERATING_FILTERS)
    return result


# --- globals ------------------------------------------------------------------------------


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


# --- str.format ---------------------------------------------------------------------------


class _BudgetFormatter(SandboxedFormatter):
    """The sandbox's str.format, checking each field's predicted size before formatting it."""

    def __init__(self, env: BudgetedSandbox, meter: Meter, **kwargs: Any) -> None:
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


# --- code generation ----------------------------------------------------------------------


_TICK = "budget_tick"
_TICK_TRUE = "budget_tick_true"


def _is_tick(node: nodes.Node) -> bool:
    return (
        isinstance(node, nodes.ExprStmt)
        and isinstance(node.node, nodes.EnvironmentAttribute)
        and node.node.name == _TICK
    )


class BudgetCodeGenerator(CodeGenerator):
    """Jinja's code generator, plus: a tick per loop iteration, a checked `~`, checked
    list/tuple/dict displays, and output conversion that counts what it creates."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._output_names: list[str] = []

    def visit_For(self, node: nodes.For, frame: Frame) -> None:
        # Jinja allows no custom node types; templates cannot write EnvironmentAttribute
        # nodes, so these two serve as markers, written out as calls below.
        if not (node.body and _is_tick(node.body[0])):
            lineno = node.lineno
            tick = nodes.ExprStmt(nodes.EnvironmentAttribute(_TICK, lineno=lineno), lineno=lineno)
            node.body = [tick, *node.body]
            if node.test is not None:
                first = nodes.EnvironmentAttribute(_TICK_TRUE, lineno=lineno)
                node.test = nodes.And(first, node.test, lineno=lineno)
        super().visit_For(node, frame)

    def visit_EnvironmentAttribute(self, node: nodes.EnvironmentAttribute, frame: Frame) -> None:
        if node.name in (_TICK, _TICK_TRUE):
            self.write(f"environment.{node.name}()")
        else:
            super().visit_EnvironmentAttribute(node, frame)

    @optimizeconst
    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
        if frame.eval_ctx.volatile:
            join = "(markup_join if context.eval_ctx.volatile else str_join)"
        elif frame.eval_ctx.autoescape:
            join = "markup_join"
        else:
            join = "str_join"
        self.write(f"environment.budget_concat({join}, (")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write("))")

    def visit_List(self, node: nodes.List, frame: Frame) -> None:
        self.write("environment.budget_container(")
        super().visit_List(node, frame)
        self.write(")")

    def visit_Tuple(self, node: nodes.Tuple, frame: Frame) -> None:
        if node.ctx != "load":  # an assignment target
            super().visit_Tuple(node, frame)
            return
        self.write("environment.budget_container(")
        super().visit_Tuple(node, frame)
        self.write(")")

    def visit_Dict(self, node: nodes.Dict, frame: Frame) -> None:
        self.write("environment.budget_container(")
        super().visit_Dict(node, frame)
        self.write(")")

    @staticmethod
    def _plain(frame: Frame, finalize: CodeGenerator._FinalizeInfo) -> bool:
        return not (frame.eval_ctx.volatile or frame.eval_ctx.autoescape) and finalize.src is None

    def _output_child_pre(
        self, node: nodes.Expr, frame: Frame, finalize: CodeGenerator._FinalizeInfo
    ) -> None:
        # `str(x)` for a str is x itself (nothing created): keep that path a type check,
        # and send everything else (numbers, lists, Markup, undefined) to budget_str.
        if self._plain(frame, finalize):
            name = self.temporary_identifier()
            self._output_names.append(name)
            self.write(f"({name} if ({name} := ")
        else:
            self.write("environment.budget_str(")
            super()._output_child_pre(node, frame, finalize)

    def _output_child_post(
        self, node: nodes.Expr, frame: Frame, finalize: CodeGenerator._FinalizeInfo
    ) -> None:
        if self._plain(frame, finalize):
            name = self._output_names.pop()
            self.write(f").__class__ is str else environment.budget_str({name}))")
        else:
            super()._output_child_post(node, frame, finalize)
            self.write(")")


def tick() -> None:
    """Generated code: one iteration of a `{% for %}`."""
    active().tick()


def tick_true() -> bool:
    """Generated code: one iteration of a `{% for ... if %}` test."""
    active().tick()
    return True


def budget_concat(join: Callable[[Iterable[Any]], str], parts: Sequence[Any]) -> str:
    """Generated code and expression closures: `a ~ b ~ c`, checked before joining."""
    meter = active()
    limit = meter.budget.string_length
    size = 0
    for part in parts:
        size += len(part) if part.__class__ is str else text_size(part, limit)
    meter.allow_str(size, "~")
    result = join(parts)
    meter.charge(len(result))
    return result


def budget_container(value: T) -> T:
    """Generated code and expression closures: a list, tuple or dict display."""
    active().check_container(value, "literal")
    return value


_OUTPUT_BATCH = 256


def concat_output(parts: Iterable[str]) -> str:
    """`Environment.concat`: a captured block (a list) or the render's output (a stream),
    refused past output_length. The stream is counted in batches of chunks (C-speed for a
    small template, and never more than a batch past the limit)."""
    meter = active()
    limit = meter.budget.output_length
    if isinstance(parts, list):
        size = sum(map(len, parts))
        if size > limit:
            raise BudgetExceeded(OUTPUT_LENGTH, limit, size, "captured block")
        meter.charge(size)
        return "".join(parts)
    stream = iter(parts)
    out = list(islice(stream, _OUTPUT_BATCH))
    size = sum(map(len, out))
    while size <= limit:
        if len(out) % _OUTPUT_BATCH:  # the stream ended inside this batch
            return "".join(out)
        batch = list(islice(stream, _OUTPUT_BATCH))
        if not batch:
            return "".join(out)
        size += sum(map(len, batch))
        out += batch
    raise BudgetExceeded(OUTPUT_LENGTH, limit, what="output")


# --- light templates ----------------------------------------------------------------------

# Straight-line nodes that build nothing big: no loops, macros, includes, blocks, operators
# that build values, `~`, list/dict displays, method calls or amplifying filters.
_LIGHT_NODES = (
    nodes.Template, nodes.Output, nodes.TemplateData, nodes.Const, nodes.Name, nodes.Getattr,
    nodes.Getitem, nodes.If, nodes.CondExpr, nodes.And, nodes.Or, nodes.Not, nodes.Compare,
    nodes.Operand, nodes.Test, nodes.Keyword, nodes.Filter, nodes.Call, nodes.Assign,
)  # fmt: skip


def light_values(budget: Budget) -> int:
    """How many values a light template may output or assign (or a light expression
    filter): each may be string_length long, and together they stay within built_chars."""
    return budget.built_chars // budget.string_length


def is_light(
    tree: nodes.Template,
    filters: Container[str],
    global_names: Container[str],
    budget: Budget,
) -> bool:
    """Whether a template can render with no meter and still stay inside `budget`.

    True for a straight-line template (only `_LIGHT_NODES`; filters from `filters`, which
    map their input to a bounded, non-compounding output; calls only to `global_names`,
    whose result is small) that outputs or assigns at most built_chars // string_length
    values: each value is at most string_length long (checked), so the render cannot build
    more than built_chars, loop or recurse; its output is checked against output_length.
    This is the common notification template, and skipping the meter keeps it as fast as
    it was before budgets.
    """
    values = 0
    for node in (tree, *tree.find_all(nodes.Node)):
        if not isinstance(node, _LIGHT_NODES):
            return False
        if isinstance(node, nodes.Filter):
            if node.name not in filters:
                return False
        elif isinstance(node, nodes.Call):
            if not (isinstance(node.node, nodes.Name) and node.node.name in global_names):
                return False
            if node.dyn_args is not None or node.dyn_kwargs is not None:
                return False
        elif isinstance(node, nodes.Assign):
            if not isinstance(node.target, nodes.Name):
                return False
            values += 1
        elif isinstance(node, nodes.Output):
            values += sum(not isinstance(child, nodes.TemplateData) for child in node.nodes)
    return values <= light_values(budget)


# --- the environment ----------------------------------------------------------------------


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
        self.light_filters: set[str] = set(_UNBUDGETED_FILTERS | _SOFT_FILTERS)
        self.filters = budgeted_filters(self.filters, self)
        self.globals["range"] = budget_range
        self.globals["lipsum"] = budget_lipsum

    def budget_str(self, value: Any) -> str:
        """Generated code: output of a value that is not a plain str (numbers, lists,
        Markup); counted under the meter, or checked for size in a light render."""
        text = value if isinstance(value, str) else str(value)
        meter = _ACTIVE.get()
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
            _check_pow(meter, left, right)
        elif operator == "*":
            _check_mul(meter, left, right)
        elif operator == "%":
            if isinstance(left, (str, bytes)):
                meter.allow_str(printf_size(left, right, meter.budget.string_length), "%")
        elif operator == "+":
            _check_add(meter, left, right)
        result = self.binop_table[operator](left, right)
        if isinstance(result, (str, bytes, list, tuple)):
            meter.charge(len(result))
        return result

    def call(self, context: Context, obj: Any, /, *args: Any, **kwargs: Any) -> Any:
        """Every call checks the clock; str/bytes/int methods that can build big values
        check their arguments first, and every result is settled."""
        if not self.is_safe_callable(obj):  # as the sandbox's own call
            raise SecurityError(f"{obj!r} is not safely callable")
        check: _MethodCheck | None = None
        cls = obj.__class__
        if cls is BuiltinMethodType or cls is MethodType:  # a bound str/bytes/int method?
            owner = obj.__self__
            if isinstance(owner, (str, bytes)):
                check = _STR_METHODS.get(obj.__name__)
            elif isinstance(owner, int):
                check = _INT_METHODS.get(obj.__name__)
        meter = _ACTIVE.get()
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
        owner = value.__self__
        if not isinstance(owner, str):
            return None
        str_type = type(owner)
        is_format_map = value.__name__ == "format_map"
        env = self

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
