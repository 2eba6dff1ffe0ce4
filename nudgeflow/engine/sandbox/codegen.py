"""The budgeted code generator, and the hooks its generated code calls at run time.

Invariant: nothing a template can write escapes the meter in compiled code. Every
`{% for %}` body (and its `if` test) starts with a tick, `~` and list/tuple/dict displays
are checked before they are built, output that is not already a str is converted through
`budget_str`, and `concat_output` (the environment's `concat`) refuses a render or captured
block past output_length. Generated code reaches the hooks (`tick`, `budget_concat`, ...)
as attributes of the environment (`environment.<name>`); expression closures import them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from itertools import islice
from typing import Any, TypeVar

from jinja2 import nodes
from jinja2.compiler import CodeGenerator, Frame, optimizeconst

from nudgeflow.engine.sandbox.budget import OUTPUT_LENGTH, BudgetExceeded
from nudgeflow.engine.sandbox.meter import active
from nudgeflow.engine.sandbox.sizes import text_size

T = TypeVar("T")

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
