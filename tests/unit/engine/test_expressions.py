"""`when` expressions: checked at load, sandboxed at run time, never a crash."""

from __future__ import annotations

import pytest

from nudgeflow.engine.expressions import CountRef, ExpressionError, SumRef, compile_expression

CTX = {
    "user": {"id": "u1", "name": "Ana", "segment": "vip"},
    "cart": {"items": [{"product_id": "p1"}], "value": 60.0, "count": 1, "currency": "USD"},
    "event": {"type": "cart_add", "ts": 1000, "properties": {"price": 60}},
    "now": 2000,
    "count": lambda t, w: 3,
    "sum": lambda t, p, w: 99.5,
}


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("cart.value > 50", True),
        ("cart.items | length == 1", True),  # the key, not dict.items
        ("user.segment == 'vip' and cart.count >= 1", True),
        ("count('product_view', '1h') >= 3 and sum('purchase', 'amount', '7d') < 100", True),
        ("now - event.ts >= 1000", True),
        ("event.properties.price > 100", False),
        ("user.tier is defined and user.tier == 'gold'", False),
    ],
)
def test_evaluates(source: str, expected: bool) -> None:
    assert compile_expression(source).evaluate(CTX) == (expected, None)


def test_collects_windows_for_the_history() -> None:
    expr = compile_expression("count('a', '1h') > 1 or sum('b', 'amount', '2d') > 3")
    assert expr.counts == {CountRef("a", 3_600_000)}
    assert expr.sums == {SumRef("b", "amount", 172_800_000)}


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("foo > 1", "unknown name 'foo'"),
        ("range(10) | length > 1", "unknown name 'range'"),
        ("lipsum()", "unknown name 'lipsum'"),
        ("cart.value.__class__.__mro__()", "only count(...) and sum(...) may be called"),
        ("count('a')", "count() takes (type, window)"),
        ("count('a', cart.value)", "must be a quoted literal string"),
        ("count('a', '1x')", "invalid duration '1x'"),
        ("sum('a', '1h')", "sum() takes (type, property, window)"),
        ("cart.value | nofilter", "No filter named 'nofilter'"),
        ("cart.value >", "does not compile"),
        ("1 }}{{ 2", "single expression"),
        ("count", "must be called"),
        ("", "empty"),
    ],
)
def test_rejected_at_load(source: str, message: str) -> None:
    with pytest.raises(ExpressionError, match=None) as info:
        compile_expression(source)
    assert message in str(info.value)


@pytest.mark.parametrize(
    "source",
    [
        "''.__class__",
        "cart.__init__",
        "cart.__class__.__base__",
        "user.__dict__",
        "(cart.items | first).__class__.__subclasses__",
        "event.properties.__getitem__",
        "cart.items.append",  # list mutation methods are unsafe in the immutable sandbox
        "user.update",
    ],
)
def test_python_internals_are_unreachable(source: str) -> None:
    ok, reason = compile_expression(source).evaluate(CTX)
    assert ok is False
    assert reason is not None and ("unsafe" in reason or "Undefined" in reason)


def test_undefined_field_is_false_with_a_reason() -> None:
    ok, reason = compile_expression("user.tier == 'gold'").evaluate(CTX)
    assert ok is False and reason is not None and "tier" in reason


def test_runtime_type_error_is_false_with_a_reason() -> None:
    ok, reason = compile_expression("user.name > 5").evaluate(CTX)
    assert ok is False and reason is not None and "TypeError" in reason
