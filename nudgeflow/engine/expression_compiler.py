"""Compile a checked `when` expression tree into nested Python closures.

Jinja's own `compile_expression` builds a template: every call creates a new
render context and runs generated code through the template machinery, about
40 µs for `count(...) >= 3 and count(...) == 0`. This module walks the same
tree (parsed and constant-folded by Jinja exactly as Jinja would) and returns
one closure per node, so an evaluation is a handful of Python calls.

The semantics are Jinja's, operation for operation, because every
operation that the sandbox guards goes through the same environment methods
the generated code calls: attribute and item access use `env.getattr` /
`env.getitem` (no underscore or mutating attributes), filters and tests are
the environment's own functions, undefined values are the environment's
`StrictUndefined`. Nothing is passed to Python's eval/exec/compile. A node
this compiler does not know (or a filter that needs a template context)
raises `Unsupported`, and the caller keeps Jinja's compiled expression.

Names are looked up in a *scope*: anything with `get(name, default)` and
`call(name, args)`, so the engine can hand out `cart` or `count(...)`
lazily instead of building a context dict per evaluation.

With a budgeted environment (sandbox/environment.py) the closures keep its budget checks:
intercepted operators go through `env.call_binop`, `~` through the checked
concatenation and list/tuple/dict displays through the container check, exactly
as the budgeted code generator does for templates; the caller runs them under a
meter.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from jinja2 import nodes
from jinja2.nodes import EvalContext
from jinja2.optimizer import optimize
from jinja2.runtime import missing, new_context, str_join
from jinja2.sandbox import SandboxedEnvironment
from jinja2.utils import _PassArg

from nudgeflow.engine.sandbox.codegen import budget_concat, budget_container
from nudgeflow.engine.sandbox.environment import BudgetedSandbox


class Scope(Protocol):
    def get(self, name: str, default: Any, /) -> Any: ...
    def call(self, name: str, args: tuple[Any, ...], /) -> Any: ...


Compiled = Callable[[Scope], Any]


class Unsupported(Exception):
    """A node outside the compiled subset: keep Jinja's own compiled expression."""


_BINOPS: dict[str, Callable[[Any, Any], Any]] = {
    "+": operator.add,
    "-": operator.sub,
    "*": operator.mul,
    "/": operator.truediv,
    "//": operator.floordiv,
    "%": operator.mod,
    "**": operator.pow,
}
_COMPARE: dict[str, Callable[[Any, Any], Any]] = {
    "eq": operator.eq,
    "ne": operator.ne,
    "gt": operator.gt,
    "gteq": operator.ge,
    "lt": operator.lt,
    "lteq": operator.le,
    "in": lambda a, b: a in b,
    "notin": lambda a, b: a not in b,
}


def compile_tree(expr: nodes.Expr, env: SandboxedEnvironment) -> Compiled:
    """Fold constants the way Jinja does, then build the closures. Raises Unsupported."""
    template = nodes.Template([nodes.Assign(nodes.Name("result", "store"), expr)], lineno=1)
    template.set_environment(env)
    folded = optimize(template, env)
    assert isinstance(folded, nodes.Template)
    assign = folded.body[0]
    assert isinstance(assign, nodes.Assign)
    return _Builder(env).build(assign.node)


class _Builder:
    def __init__(self, env: SandboxedEnvironment) -> None:
        self.env = env
        self.eval_ctx = EvalContext(env)
        self.context = new_context(env, None, {})  # for env.call_binop, which ignores it
        self.budgeted = isinstance(env, BudgetedSandbox)

    def build(self, node: nodes.Node) -> Compiled:
        method = getattr(self, "_" + type(node).__name__, None)
        if method is None:
            raise Unsupported(type(node).__name__)
        result: Compiled = method(node)
        return result

    def _Const(self, node: nodes.Const) -> Compiled:
        value = node.value
        return lambda scope: value

    def _Name(self, node: nodes.Name) -> Compiled:
        name, undefined = node.name, self.env.undefined

        def name_(scope: Scope) -> Any:
            value = scope.get(name, missing)
            return undefined(name=name) if value is missing else value

        return name_

    def _Getattr(self, node: nodes.Getattr) -> Compiled:
        obj, attr, getattr_ = self.build(node.node), node.attr, self.env.getattr
        return lambda scope: getattr_(obj(scope), attr)

    def _Getitem(self, node: nodes.Getitem) -> Compiled:
        obj = self.build(node.node)
        if isinstance(node.arg, nodes.Slice):  # Jinja subscripts slices directly
            part = self._slice(node.arg)
            return lambda scope: obj(scope)[part(scope)]
        arg, getitem = self.build(node.arg), self.env.getitem
        return lambda scope: getitem(obj(scope), arg(scope))

    def _slice(self, node: nodes.Slice) -> Callable[[Scope], slice]:
        parts = [None if p is None else self.build(p) for p in (node.start, node.stop, node.step)]
        start, stop, step = (
            (lambda scope: None) if p is None else p for p in parts
        )  # fmt: skip
        return lambda scope: slice(start(scope), stop(scope), step(scope))

    def _And(self, node: nodes.And) -> Compiled:
        left, right = self.build(node.left), self.build(node.right)
        return lambda scope: left(scope) and right(scope)

    def _Or(self, node: nodes.Or) -> Compiled:
        left, right = self.build(node.left), self.build(node.right)
        return lambda scope: left(scope) or right(scope)

    def _Not(self, node: nodes.Not) -> Compiled:
        self._unop("not")
        inner = self.build(node.node)
        return lambda scope: not inner(scope)

    def _Neg(self, node: nodes.Neg) -> Compiled:
        self._unop("-")
        inner = self.build(node.node)
        return lambda scope: -inner(scope)

    def _Pos(self, node: nodes.Pos) -> Compiled:
        self._unop("+")
        inner = self.build(node.node)
        return lambda scope: +inner(scope)

    def _unop(self, op: str) -> None:
        if op in getattr(self.env, "intercepted_unops", ()):
            raise Unsupported(f"intercepted unary {op}")

    def _binexpr(self, node: nodes.BinExpr) -> Compiled:
        op = node.operator
        left, right = self.build(node.left), self.build(node.right)
        if op in self.env.intercepted_binops:
            call_binop, context = self.env.call_binop, self.context
            return lambda scope: call_binop(context, op, left(scope), right(scope))
        fn = _BINOPS[op]
        return lambda scope: fn(left(scope), right(scope))

    _Add = _Sub = _Mul = _Div = _FloorDiv = _Mod = _Pow = _binexpr

    def _Compare(self, node: nodes.Compare) -> Compiled:
        first = self.build(node.expr)
        ops = [(_COMPARE[o.op], self.build(o.expr)) for o in node.ops]
        if len(ops) == 1:
            fn, right = ops[0]
            if isinstance(node.ops[0].expr, nodes.Const):
                const = node.ops[0].expr.value
                return lambda scope: fn(first(scope), const)
            return lambda scope: fn(first(scope), right(scope))

        def chain(scope: Scope) -> Any:  # Python's a < b < c: b evaluated once
            left = first(scope)
            result: Any = True
            for fn, operand in ops:
                right = operand(scope)
                result = fn(left, right)
                if not result:
                    return result
                left = right
            return result

        return chain

    def _CondExpr(self, node: nodes.CondExpr) -> Compiled:
        if node.expr2 is None:
            raise Unsupported("inline if without else")
        test, yes, no = self.build(node.test), self.build(node.expr1), self.build(node.expr2)
        return lambda scope: yes(scope) if test(scope) else no(scope)

    def _checked(self, build: Compiled) -> Compiled:
        """A list/tuple/dict display, checked against the budget when there is one."""
        if not self.budgeted:
            return build
        return lambda scope: budget_container(build(scope))

    def _List(self, node: nodes.List) -> Compiled:
        items = [self.build(i) for i in node.items]
        return self._checked(lambda scope: [i(scope) for i in items])

    def _Tuple(self, node: nodes.Tuple) -> Compiled:
        items = [self.build(i) for i in node.items]
        return self._checked(lambda scope: tuple(i(scope) for i in items))

    def _Dict(self, node: nodes.Dict) -> Compiled:
        pairs = [(self.build(p.key), self.build(p.value)) for p in node.items]
        return self._checked(lambda scope: {k(scope): v(scope) for k, v in pairs})

    def _Concat(self, node: nodes.Concat) -> Compiled:
        parts = [self.build(n) for n in node.nodes]
        if self.budgeted:
            return lambda scope: budget_concat(str_join, [p(scope) for p in parts])
        return lambda scope: str_join([p(scope) for p in parts])

    def _Filter(self, node: nodes.Filter) -> Compiled:
        return self._filter_or_test(node, self.env.filters)

    def _Test(self, node: nodes.Test) -> Compiled:
        return self._filter_or_test(node, self.env.tests)

    def _filter_or_test(
        self, node: nodes.Filter | nodes.Test, table: Mapping[str, Any]
    ) -> Compiled:
        func = table.get(node.name)
        if func is None or node.node is None or node.dyn_args or node.dyn_kwargs:
            raise Unsupported(f"{node.name}: not a plain filter/test")
        pass_arg = _PassArg.from_obj(func)
        if pass_arg is _PassArg.context:
            raise Unsupported(f"{node.name} needs a template context")
        first: tuple[Any, ...] = ()
        if pass_arg is _PassArg.eval_context:
            first = (self.eval_ctx,)
        elif pass_arg is _PassArg.environment:
            first = (self.env,)
        value = self.build(node.node)
        args = [self.build(a) for a in node.args]
        kwargs: list[tuple[str, Compiled]] = [
            (str(k.key), self.build(k.value)) for k in node.kwargs
        ]
        if not args and not kwargs:
            if first:
                return lambda scope: func(*first, value(scope))
            return lambda scope: func(value(scope))
        return lambda scope: func(
            *first,
            value(scope),
            *[a(scope) for a in args],
            **{k: v(scope) for k, v in kwargs},
        )

    def _Call(self, node: nodes.Call) -> Compiled:
        # expressions.py allows only count/sum with literal string arguments
        if not isinstance(node.node, nodes.Name) or node.kwargs or node.dyn_args:
            raise Unsupported("call")
        if not all(isinstance(a, nodes.Const) for a in node.args):
            raise Unsupported("call with computed arguments")
        name = node.node.name
        args = tuple(a.value for a in node.args)  # type: ignore[attr-defined]
        return lambda scope: scope.call(name, args)
