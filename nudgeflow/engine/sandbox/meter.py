"""The meter of the render or evaluation in progress: what is left of its budget.

Invariant: a meter belongs to exactly one render or evaluation. `run_metered` creates a
fresh one and keeps it in a context variable for the duration of one call, so concurrent
renders (threads, tasks) never share or leak one, and `active()` outside a metered call
raises `Unmetered` rather than letting a budgeted operation run unbounded. `settle_idle`
is the meter-less check a light render uses: sizes only, nothing to count.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextvars import ContextVar
from time import monotonic
from typing import Any, ParamSpec, TypeVar

from nudgeflow.engine.sandbox.budget import (
    BUILT_CHARS,
    INT_BITS,
    LIST_LENGTH,
    LOOP_ITERATIONS,
    STRING_LENGTH,
    WALL_TIME_MS,
    Budget,
    BudgetExceeded,
    Unmetered,
)
from nudgeflow.engine.sandbox.sizes import text_size

T = TypeVar("T")
P = ParamSpec("P")


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

    def spend(self, iterations: int, what: str) -> None:
        """Pay `iterations` loop iterations at once, before work that costs as many."""
        if iterations > self.iterations_left:
            raise BudgetExceeded(LOOP_ITERATIONS, self.budget.loop_iterations, iterations, what)
        self.iterations_left -= iterations

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

current = _ACTIVE.get
"""The meter in progress, or None: `_ACTIVE.get` itself, so hot paths pay no extra call."""


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
