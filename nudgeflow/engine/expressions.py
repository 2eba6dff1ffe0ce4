"""Sandboxed `when` expressions (DESIGN §3), compiled once at load.

Expressions are Jinja2 expressions run by the immutable sandbox, never Python
`eval`. At load the parsed tree is checked: only the names `user`, `cart`,
`event`, `now`, `count` and `sum` exist, `count`/`sum` take literal arguments
(so the engine knows which events and windows to keep in the user's history),
and unknown filters fail the compile. At fire time any runtime problem
(undefined field, type error, sandbox refusal) makes the condition false with
a reason instead of raising.

Evaluation runs closures built from the checked tree (expression_compiler.py,
same sandbox operations, no per-call template context); Jinja's own compiled
expression is kept for anything that compiler does not cover.

Every evaluation that can do costly work (operators that build values, `~`,
filters, list/dict displays) runs under a `Budget` (sandbox/budget.py), so
`(((10**64)**64)**64)**64 > 0` is false within microseconds with the reason
"budget exceeded: int_bits > 4096 (...)" instead of stalling the worker for
25 s; `sandbox.budget.limit_of(reason)` names the limit. Expressions made only of names,
attributes, comparisons, `and`/`or`/`not`, tests, `-`, `/`, `//`, a few string
filters (`lower`, `upper`, `trim`, ...) and `count`/`sum` cannot build anything
big and skip the meter.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from jinja2 import StrictUndefined, TemplateSyntaxError, nodes
from jinja2.exceptions import TemplateError
from jinja2.parser import Parser
from jinja2.runtime import missing, new_context

from nudgeflow.engine.durations import DurationError, parse_duration
from nudgeflow.engine.expression_compiler import Compiled, Unsupported, compile_tree
from nudgeflow.engine.sandbox.budget import DEFAULT_BUDGET, Budget, BudgetExceeded
from nudgeflow.engine.sandbox.environment import BudgetedSandbox
from nudgeflow.engine.sandbox.light import light_values
from nudgeflow.engine.sandbox.meter import run_metered

NAMES = frozenset({"user", "cart", "event", "now", "count", "sum"})
_SIGNATURES = {"count": ("type", "window"), "sum": ("type", "property", "window")}


class ExpressionError(ValueError):
    """A `when` expression that cannot be compiled or uses what is not allowed."""


class _DataFirstSandbox(BudgetedSandbox):
    """`cart.items` must mean the key, not `dict.items`: look up dict keys first."""

    def getattr(self, obj: Any, attribute: str) -> Any:
        if type(obj) is dict and attribute in obj:
            return obj[attribute]
        return super().getattr(obj, attribute)


_ENV = _DataFirstSandbox(undefined=StrictUndefined)
_CALL_CONTEXT = new_context(_ENV, None, {})  # for env.call(); count/sum take no context

# Nodes that cannot build a big value or loop: an expression made only of these (and of a
# few light filters, such as `lower`) skips the meter, so the common
# `count(...) >= 3 and cart.value > 50` stays as fast as before budgets.
_UNMETERED = (
    nodes.Name, nodes.Const, nodes.Getattr, nodes.Getitem, nodes.Slice, nodes.And, nodes.Or,
    nodes.Not, nodes.Neg, nodes.Pos, nodes.Compare, nodes.Operand, nodes.CondExpr, nodes.Call,
    nodes.Test, nodes.Sub, nodes.Div, nodes.FloorDiv, nodes.Keyword,
)  # fmt: skip


class WhenScope(Protocol):
    """What an expression's names resolve in (see expression_compiler.Scope)."""

    def get(self, name: str, default: Any, /) -> Any: ...
    def call(self, name: str, args: tuple[Any, ...], /) -> Any: ...
    def to_context(self) -> Mapping[str, Any]: ...


class MappingScope:
    """A plain context mapping as a scope; calls go through the sandbox like Jinja's."""

    __slots__ = ("_context",)

    def __init__(self, context: Mapping[str, Any]) -> None:
        self._context = context

    def get(self, name: str, default: Any, /) -> Any:
        return self._context.get(name, default)

    def call(self, name: str, args: tuple[Any, ...], /) -> Any:
        fn = self._context.get(name, missing)
        if fn is missing:
            fn = _ENV.undefined(name=name)
        return _ENV.call(_CALL_CONTEXT, fn, *args)

    def to_context(self) -> Mapping[str, Any]:
        return self._context


@dataclass(frozen=True, slots=True)
class CountRef:
    type: str
    window_ms: int


@dataclass(frozen=True, slots=True)
class SumRef:
    type: str
    property: str
    window_ms: int


@dataclass(frozen=True, eq=False)
class Expression:
    source: str
    counts: frozenset[CountRef]
    sums: frozenset[SumRef]
    _compiled: Callable[..., Any]  # Jinja's compiled expression, metered
    _fast: Compiled | None = None
    budget: Budget = DEFAULT_BUDGET
    _metered: bool = True  # False: nothing in it can build a big value or loop

    def evaluate(self, context: Mapping[str, Any]) -> tuple[bool, str | None]:
        """(result, reason): reason explains a False caused by an error, or names the
        budget limit it went over ("budget exceeded: string_length > ...")."""
        return self.evaluate_in(MappingScope(context))

    def evaluate_in(self, scope: WhenScope) -> tuple[bool, str | None]:
        """Like `evaluate`, with names resolved lazily by `scope`."""
        try:
            fast = self._fast
            if fast is None:
                return bool(self._compiled(**scope.to_context())), None
            if self._metered:
                return bool(run_metered(self.budget, fast, scope)), None
            return bool(fast(scope)), None
        except BudgetExceeded as exc:
            return False, str(exc)
        except Exception as exc:  # sandbox, undefined, type errors: never a crash
            return False, f"{type(exc).__name__}: {exc}"


def _metered_jinja(compiled: Callable[..., Any], budget: Budget) -> Callable[..., Any]:
    """Jinja's compiled expression, each call under a fresh meter."""

    def evaluate(**context: Any) -> Any:
        return run_metered(budget, compiled, **context)

    return evaluate


def _literal(call: nodes.Call, i: int, what: str, fn: str) -> str:
    arg = call.args[i]
    if not isinstance(arg, nodes.Const) or not isinstance(arg.value, str):
        raise ExpressionError(f"{fn}(): argument {what!r} must be a quoted literal string")
    return arg.value


def _check_call(call: nodes.Call) -> CountRef | SumRef:
    if not isinstance(call.node, nodes.Name):
        raise ExpressionError("only count(...) and sum(...) may be called")
    fn = call.node.name
    params = _SIGNATURES.get(fn)
    if params is None:
        raise ExpressionError(f"unknown function {fn}() (allowed: count, sum)")
    if call.kwargs or call.dyn_args or call.dyn_kwargs or len(call.args) != len(params):
        raise ExpressionError(f"{fn}() takes ({', '.join(params)})")
    values = [_literal(call, i, p, fn) for i, p in enumerate(params)]
    try:
        window_ms = parse_duration(values[-1])
    except DurationError as exc:
        raise ExpressionError(f"{fn}(): {exc}") from None
    if window_ms <= 0:
        raise ExpressionError(f"{fn}(): window must be positive")
    if fn == "count":
        return CountRef(values[0], window_ms)
    return SumRef(values[0], values[1], window_ms)


def compile_expression(source: str, budget: Budget = DEFAULT_BUDGET) -> Expression:
    """Parse, check names and calls, compile. Raises ExpressionError. Evaluations run
    under `budget`."""
    if not isinstance(source, str) or not source.strip():
        raise ExpressionError("expression is empty")
    try:
        tree = _ENV.parse("{{ " + source + " }}")
    except TemplateSyntaxError as exc:
        message = (exc.message or "").replace("print statement", "expression")  # Jinja's words
        raise ExpressionError(f"does not compile: {message}") from None
    body = tree.body
    if len(body) != 1 or not isinstance(body[0], nodes.Output) or len(body[0].nodes) != 1:
        raise ExpressionError("must be a single expression")
    for name in tree.find_all(nodes.Name):
        if name.name not in NAMES:
            raise ExpressionError(
                f"unknown name {name.name!r} (allowed: {', '.join(sorted(NAMES))})"
            )
        if name.ctx != "load":
            raise ExpressionError(f"cannot assign to {name.name!r}")
    refs: list[CountRef | SumRef] = []
    called: set[int] = set()
    for call in tree.find_all(nodes.Call):
        refs.append(_check_call(call))
        called.add(id(call.node))
    for name in tree.find_all(nodes.Name):
        if name.name in _SIGNATURES and id(name) not in called:
            raise ExpressionError(f"{name.name} must be called: {name.name}(...)")
    try:
        compiled = _ENV.compile_expression(source, undefined_to_none=False)
    except TemplateError as exc:
        raise ExpressionError(f"does not compile: {exc}") from None
    expr = body[0].nodes[0]
    return Expression(
        source=source,
        counts=frozenset(r for r in refs if isinstance(r, CountRef)),
        sums=frozenset(r for r in refs if isinstance(r, SumRef)),
        _compiled=_metered_jinja(compiled, budget),
        _fast=_closures(source),
        budget=budget,
        _metered=_needs_meter(expr, budget),
    )


def _needs_meter(expr: nodes.Expr, budget: Budget) -> bool:
    """Whether evaluating `expr` must run under a meter; without one, the sandbox's hooks
    check sizes against its own (default) budget, so another budget always meters."""
    if budget != _ENV.budget:
        return True
    filters = 0
    for node in (expr, *expr.find_all(nodes.Node)):
        if isinstance(node, nodes.Filter):
            if node.name not in _ENV.light_filters:
                return True
            filters += 1
        elif not isinstance(node, _UNMETERED):
            return True
    return filters > light_values(budget)


def _closures(source: str) -> Compiled | None:
    """The closure-compiled form, parsed exactly as `compile_expression` parses it."""
    try:
        expr = Parser(_ENV, source, state="variable").parse_expression()
        return compile_tree(expr, _ENV)
    except (Unsupported, TemplateError):
        return None
