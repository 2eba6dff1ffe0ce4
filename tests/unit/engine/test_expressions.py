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


def _jinja(source: str, context: dict[str, object]) -> tuple[bool, str | None]:
    """Jinja's own compiled expression: the reference the closures must match."""
    expr = compile_expression(source)
    try:
        return bool(expr._compiled(**context)), None
    except Exception as exc:
        return False, f"{type(exc).__name__}: {exc}"


@pytest.mark.parametrize(
    "source",
    [
        "cart.value > 50",
        "cart.items | length == 1",
        "user.segment == 'vip' and cart.count >= 1",
        "count('product_view', '1h') >= 3 and sum('purchase', 'amount', '7d') < 100",
        "now - event.ts >= 1000",
        "user.tier is defined and user.tier == 'gold'",
        "user.tier == 'gold'",
        "user.name > 5",
        "''.__class__",
        "cart.items.append",
        "(cart.items | first).__class__.__subclasses__",
        "event.properties['price'] * 2 // 3 % 7 + 1 - 0.5 > 1 < 2 <= 3",
        "not (cart.value < 10 or cart.value > 100)",
        "-cart.value < 0 and +cart.value",
        "'vip' in user.segment and 'x' not in [1, 2] and (1, 2) and {'a': 1}",
        "user.name ~ '!' == 'Ana!'",
        "user.name[1:] == 'na' and user.name[::-1] == 'anA'",
        "(cart.value if cart.count else 0) > 1",
        "cart.value | round(0, 'floor') == 60",
        "user.name | lower | default('x') == 'ana'",
        "user.missing | default('none') == 'none'",
        "cart.items[0].product_id == 'p1'",
        "cart.items[5] is defined",
        "cart.value / 0 > 1",
        "2 ** 10 == 1024",
    ],
)
def test_closures_match_jinja(source: str) -> None:
    expr = compile_expression(source)
    assert expr._fast is not None  # the closure path is the one under test
    assert expr.evaluate(CTX) == _jinja(source, CTX)
