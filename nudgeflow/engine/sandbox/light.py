"""Light templates: the ones that may render with no meter at all.

Invariant: a template `is_light` only if it cannot loop, recurse or build more than
built_chars with no meter counting: straight-line nodes only, filters that map their input
to a bounded, non-compounding output, calls only to globals with a small fixed-size
result, and at most `light_values(budget)` values output or assigned, each checked
against string_length by the hooks it reaches. Anything it does not recognise is not
light, and a render that is not light is metered, which is always safe. This keeps the
common notification template as fast as it was before budgets.
"""

from __future__ import annotations

from collections.abc import Container

from jinja2 import nodes

from nudgeflow.engine.sandbox.budget import Budget

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
