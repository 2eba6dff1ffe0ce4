"""Budgets: every render and `when` evaluation is bounded in loops, sizes, output and time.

Each attack below used to hang the worker for seconds or build hundreds of megabytes; each
must now fail fast with a TemplateError (or a false condition) that names the limit, while
ordinary templates render exactly as before.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

from nudgeflow.engine.expressions import compile_expression
from nudgeflow.engine.sandbox.budget import (
    DEFAULT_BUDGET,
    Budget,
    BudgetExceeded,
    Unmetered,
    limit_of,
)
from nudgeflow.engine.sandbox.environment import BudgetedSandbox
from nudgeflow.engine.templates import SAMPLE_CONTEXT, TemplateError, Templates

SECRET = b"test-secret"
FAST = 2.0  # seconds; the attacks took 4-25 s (or hundreds of MB) before budgets
DEFAULTS = Path(__file__).parents[3] / "nudgeflow" / "defaults" / "templates"


def render(source: str, context: Any = None, budget: Budget = DEFAULT_BUDGET) -> str:
    templates = Templates(None, secret=SECRET, inline={"t.j2": source}, budget=budget)
    return templates.render("t.j2", SAMPLE_CONTEXT if context is None else context)


def with_user(**traits: Any) -> dict[str, Any]:
    return {**SAMPLE_CONTEXT, "user": {**SAMPLE_CONTEXT["user"], **traits}}


# The limit each attack names must not depend on how busy the machine is, so those tests
# give the clock a minute; test_defaults_stop_every_attack_fast runs them on the defaults.
NO_CLOCK = Budget(wall_time_ms=60_000)


def assert_fails_fast(
    source: str, limit: str, context: Any = None, budget: Budget = NO_CLOCK
) -> TemplateError:
    started = time.monotonic()
    with pytest.raises(TemplateError) as info:
        render(source, context, budget)
    elapsed = time.monotonic() - started
    assert elapsed < FAST, f"took {elapsed:.2f} s"
    assert info.value.limit == limit, str(info.value)
    assert f"budget exceeded: {limit} > " in str(info.value)
    assert info.value.reason.startswith(f"budget exceeded: {limit} > ")
    return info.value


# --- template attacks ---------------------------------------------------------------------

ATTACKS: list[tuple[str, str]] = [
    # integers: both operands and the predicted result of `**`, `*`, `+`
    ("{{ (((10**64)**64)**64)**64 }}", "int_bits"),
    ("{{ 9 ** 999999999 }}", "int_bits"),
    ("{{ 2 ** (10 ** 9) }}", "int_bits"),
    (
        "{% set ns = namespace(n=3) %}{% for i in range(40) %}{% set ns.n = ns.n * ns.n %}"
        "{% endfor %}{{ ns.n }}",
        "int_bits",
    ),
    (
        "{% set ns = namespace(n=3) %}{% for i in range(99999) %}{% set ns.n = ns.n + ns.n %}"
        "{% endfor %}{{ ns.n }}",
        "int_bits",
    ),
    ("{{ ('f' * 100000)|int(base=16) }}", "int_bits"),
    # `round` computes 10 ** precision in one C call that holds the GIL: refused first
    ("{{ 5|round(-1000000000) }}", "int_bits"),
    ("{{ 1.5|round(1000000000, 'floor') }}", "int_bits"),
    ("{{ cart.count|round(-(user.n ** 2)) }}", "int_bits"),
    # strings built by operators
    ("{{ '%0200000000d' % 1 }}", "string_length"),
    ("{{ '%.200000000f' % 1.0 }}", "string_length"),
    ("{{ '%*d' % (200000000, 1) }}", "string_length"),
    ("{{ '%(a)s%(a)s%(a)s%(a)s' % {'a': 'x' * 400000} }}", "string_length"),
    ("{{ 'a' * 10**9 }}", "string_length"),
    ("{{ ('a' * 600000) + ('b' * 600000) }}", "string_length"),
    (
        "{% set ns = namespace(s='ab') %}{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}"
        "{% endfor %}{{ ns.s|length }}",
        "string_length",
    ),
    # str methods
    ("{{ '{:0200000000}'.format(1) }}", "string_length"),
    ("{{ '{:>{w}}'.format('x', w=200000000) }}", "string_length"),
    ("{{ '{:.200000000f}'.format(1.5) }}", "string_length"),
    ("{{ '{0}{0}{0}{0}{0}'.format('x' * 300000) }}", "string_length"),
    ("{{ '{a}{a}{a}'.format_map({'a': 'x' * 400000}) }}", "string_length"),
    ("{{ 'a'.center(200000000) }}", "string_length"),
    ("{{ 'a'.ljust(200000000) }}", "string_length"),
    ("{{ 'a'.rjust(200000000) }}", "string_length"),
    ("{{ '1'.zfill(200000000) }}", "string_length"),
    ("{{ ('\t' * 1000).expandtabs(1000000) }}", "string_length"),
    ("{{ ('y' * 100000).join('x' * 100000) }}", "string_length"),
    ("{{ ('a' * 100000).replace('a', 'b' * 100000) }}", "string_length"),
    ("{{ ('a' * 100000).replace('', 'b' * 1000) }}", "string_length"),
    ("{{ ('a' * 100000).translate({97: 'b' * 100000}) }}", "string_length"),
    ("{{ (1).to_bytes(1000000000, 'big') }}", "string_length"),
    ("{{ ('a,' * 400000).split(',')|length }}", "list_length"),
    # filters
    ("{{ 'a'|center(200000000) }}", "string_length"),
    ("{{ ('a\n' * 100000)|indent(100000) }}", "string_length"),
    ("{{ 'a'|indent(200000000, true) }}", "string_length"),
    ("{{ ('a\r' * 100000)|indent('x' * 1000) }}", "string_length"),
    ("{{ ('a ' * 100000)|wordwrap(1, wrapstring='x' * 100000) }}", "string_length"),
    ("{{ '%0200000000d'|format(1) }}", "string_length"),
    ("{{ '%*s'|format(200000000, 'x') }}", "string_length"),
    ("{{ ('x' * 100000)|join('y' * 100000) }}", "string_length"),
    ("{{ range(100000)|join('y' * 1000) }}", "string_length"),
    ("{{ ('a' * 100000)|replace('a', 'b' * 100000) }}", "string_length"),
    (
        "{% set ns = namespace(s='ab') %}{% for i in range(64) %}"
        "{% set ns.s = (ns.s ~ ns.s)|truncate(10**12, true, '') %}{% endfor %}",
        "string_length",
    ),
    ("{{ ('www.x.com ' * 10000)|urlize(target='x' * 100000) }}", "string_length"),
    ("{{ [[[[[[1, 2, 3]]]]]]|tojson(indent=100000000) }}", "string_length"),
    ("{{ lipsum(100000) }}", "string_length"),
    # lists
    ("{{ [1] * 10**9 }}", "list_length"),
    ("{{ range(10**9)|list }}", "list_length"),
    ("{{ range(10**9)|length }}", "list_length"),
    ("{{ [1]|batch(1000000000, 0)|list }}", "list_length"),
    ("{{ [1]|slice(1000000000)|list }}", "list_length"),
    ("{{ ('x' * 1000000)|list|length }}", "loop_iterations"),
    # lists that would print as far more than they hold (shared references)
    (
        "{% set ns = namespace(x=['ab']) %}{% for i in range(60) %}{% set ns.x = [ns.x, ns.x] %}"
        "{% endfor %}{{ ns.x }}",
        "string_length",
    ),
    ("{% set a = ['x' * 100000] * 20 %}{{ a }}", "string_length"),
    (
        "{% set a = ['x' * 100000] %}{% set b = dict(p=a, q=a, r=a, s=a, t=a, u=a, v=a, w=a, "
        "y=a, z=a, zz=a) %}{{ b }}",
        "string_length",
    ),
    # loops, counted across nesting
    (
        "{% for i in range(user.n) %}{% for j in range(user.n) %}x{% endfor %}{% endfor %}",
        "loop_iterations",
    ),
    (
        "{% for i in range(100000) %}{% for j in range(100000) if j < 0 %}{% endfor %}{% endfor %}",
        "loop_iterations",
    ),
    (
        "{% for i in range(1000) %}{{ range(1000)|list|length }}{% endfor %}",
        "loop_iterations",
    ),
    # output: top level, captured blocks and memory held across iterations
    (
        "{% set big = 'x' * 100000 %}{% for i in range(100000) %}{{ big }}{% endfor %}",
        "output_length",
    ),
    ("{% for i in range(100000) %}{{ 'x' * 100000 }}{% endfor %}", "built_chars"),
    (
        "{% set big = 'x' * 900000 %}{% set s %}{% for i in range(100000) %}{{ big }}{% endfor %}"
        "{% endset %}{{ s|length }}",
        "output_length",
    ),
    (
        "{% set big = ['x' * 90000] * 10 %}{% for i in range(100000) %}{% set s %}{{ big }}"
        "{% endset %}{% endfor %}",
        "built_chars",
    ),
    ("{{ range(100000)|map('center', 1000000)|list|length }}", "built_chars"),
    # wall time: work with no loop (exponential macro recursion)
    (
        "{% macro f(n) %}{% if n %}{{ f(n - 1) }}{{ f(n - 1) }}{% endif %}{% endmacro %}"
        "{{ f(40) }}",
        "wall_time_ms",
    ),
]


@pytest.mark.parametrize(("source", "limit"), ATTACKS)
def test_template_attack_fails_fast_naming_the_limit(source: str, limit: str) -> None:
    budget = DEFAULT_BUDGET if limit == "wall_time_ms" else NO_CLOCK
    assert_fails_fast(source, limit, with_user(n=6000), budget)


def test_defaults_stop_every_attack_fast() -> None:
    for source, _ in ATTACKS:
        started = time.monotonic()
        with pytest.raises(TemplateError) as info:
            render(source, with_user(n=6000))
        assert time.monotonic() - started < FAST, source
        assert info.value.limit is not None, str(info.value)


def test_punycode_is_paid_for_before_it_runs() -> None:
    """The punycode codec is pure Python and quadratic in distinct characters: 8,000 of
    them ran for over a minute, past every clock check (one call)."""
    distinct = "".join(chr(0x100 + i) for i in range(8000))
    for source in ["{{ user.s.encode('punycode') }}", "{{ user.b.decode(encoding='PunyCode') }}"]:
        context = with_user(s=distinct, b=distinct.encode("punycode"))
        error = assert_fails_fast(source, "loop_iterations", context)
        assert "punycode needs" in str(error)
    assert render("{{ 'bücher'.encode('punycode') }} {{ 'bücher'.encode('idna') }}") == (
        "b'bcher-kva' b'xn--bcher-kva'"
    )


def test_iterating_filters_count_their_items() -> None:
    source = "{% for i in range(10) %}{{ range(100)|select('odd')|map('string')|list }}{% endfor %}"
    with pytest.raises(TemplateError) as info:
        render(source, budget=Budget(loop_iterations=1000))
    assert info.value.limit == "loop_iterations"
    assert render(source, budget=Budget(loop_iterations=4000)).count("'99'") == 10


def test_recursive_loops_count_every_level() -> None:
    source = (
        "{% set ns = namespace() %}{% set ns.l = [ns, ns] %}{% for x in ns.l recursive %}"
        "{% if loop.depth < 30 %}{{ loop(x.l) }}{% endif %}{% endfor %}"
    )  # 2**30 iterations, 30 deep
    started = time.monotonic()
    with pytest.raises(TemplateError) as info:
        render(source, budget=Budget(loop_iterations=1000))
    assert time.monotonic() - started < FAST
    assert info.value.limit == "loop_iterations"


def test_error_carries_the_template_and_line() -> None:
    error = assert_fails_fast("ok\n{{ 'a' * 10**9 }}", "string_length")
    assert error.template == "t.j2"
    assert error.line == 2


def test_every_render_gets_a_fresh_budget() -> None:
    source = "{% for i in range(60000) %}{% endfor %}done"
    templates = Templates(None, secret=SECRET, inline={"t.j2": source}, budget=NO_CLOCK)
    for _ in range(3):  # 180,000 iterations in all, 60,000 per render
        assert templates.render("t.j2", SAMPLE_CONTEXT) == "done"


def test_concurrent_renders_do_not_share_a_budget() -> None:
    source = "{% for i in range(60000) %}{% endfor %}done"
    templates = Templates(None, secret=SECRET, inline={"t.j2": source}, budget=NO_CLOCK)
    results: list[str] = []
    errors: list[BaseException] = []

    def work() -> None:
        try:
            results.append(templates.render("t.j2", SAMPLE_CONTEXT))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == [] and results == ["done"] * 4


def test_limits_are_settings() -> None:
    small = Budget(loop_iterations=10, string_length=20, list_length=10, output_length=30)
    assert render("{% for i in range(10) %}{% endfor %}ok", budget=small) == "ok"
    for source, limit in [
        ("{% for c in 'abcdefghijk' %}{% endfor %}", "loop_iterations"),
        ("{{ 'x' * 21 }}", "string_length"),
        ("{{ range(11) }}", "list_length"),
        ("{{ 'x' * 20 }}{{ 'y' * 20 }}", "output_length"),
    ]:
        with pytest.raises(TemplateError) as info:
            render(source, budget=small)
        assert info.value.limit == limit
    slow = Budget(wall_time_ms=1)
    with pytest.raises(TemplateError, match="wall_time_ms"):
        render("{% for i in range(99999) %}{{ user.name|upper }}{% endfor %}", budget=slow)


def test_budget_defaults_are_documented_values() -> None:
    documented = Budget(
        loop_iterations=100_000,
        string_length=1_000_000,
        list_length=100_000,
        int_bits=4_096,
        output_length=1_000_000,
        built_chars=10_000_000,
        wall_time_ms=250,
    )
    assert documented == DEFAULT_BUDGET


@pytest.mark.parametrize("field", ["loop_iterations", "string_length", "wall_time_ms"])
def test_budget_rejects_non_positive_limits(field: str) -> None:
    with pytest.raises(ValueError, match=field):
        Budget(**{field: 0})


def test_budget_exceeded_names_the_limit() -> None:
    exc = BudgetExceeded("string_length", 1000, needed=5000, what="center")
    assert exc.limit == "string_length"
    assert str(exc) == "budget exceeded: string_length > 1000 (center needs 5000)"
    assert limit_of(str(exc)) == "string_length"
    assert limit_of("BudgetExceeded: " + str(exc)) is None
    assert limit_of("UndefinedError: 'x' is undefined") is None
    assert limit_of(None) is None


# --- ordinary templates are untouched -----------------------------------------------------

DEFAULT_OUTPUTS = {
    "abandoned_cart.j2": (
        "Hi Ada Lovelace, you left 3 items in your cart, including Trail Shoes ($59.90).\n"
        "As one of our regulars, here is SAVE15-JKMTNGRX for 15% off.\n"
    ),
    "browse_abandonment.j2": (
        "Hi Ada Lovelace, still thinking about Wool Socks?\n"
        "It is $4.98 today, and it is still in stock.\n"
    ),
    "post_purchase.j2": (
        "Hi Ada Lovelace, how are you enjoying your order of Wool Socks?\n"
        "Tell us in one click; thank you for being a regular!\n"
    ),
    "re_engagement.j2": (
        "Hi Ada Lovelace, we have missed you! Here is what is new since your last visit,\n"
        "and SAVE10-3MU49DV4 gives you 10% off your next order.\n"
    ),
    "welcome_1.j2": "Welcome, Ada Lovelace! Your account is ready. Start with our bestsellers.\n",
    "welcome_2.j2": "Hi Ada Lovelace, here are three tips to get the most out of your account.\n",
    "welcome_3.j2": (
        "Hi Ada Lovelace, a welcome gift: SAVE10-3MU49DV4 for 10% off your first order.\n"
    ),
}


def test_default_templates_render_exactly_as_before() -> None:
    """The templates that predate the budgets render byte for byte as before; templates
    added since (the journeys' cart_*.j2) render under the default budget."""
    templates = Templates(DEFAULTS, secret=SECRET)
    assert set(DEFAULT_OUTPUTS) <= set(templates.names())
    for name, expected in DEFAULT_OUTPUTS.items():
        assert templates.render(name, SAMPLE_CONTEXT) == expected
    for name in set(templates.names()) - set(DEFAULT_OUTPUTS):
        assert templates.render(name, SAMPLE_CONTEXT).strip()


ORDINARY: list[tuple[str, str]] = [
    (
        "{% for item in cart['items'] %}{{ loop.index }}. {{ item.product_name|upper }}"
        " x{{ item.quantity }} = {{ (item.price * item.quantity)|money }}\n{% endfor %}",
        "1. TRAIL SHOES x1 = $49.95\n2. WOOL SOCKS x2 = $9.95\n",
    ),
    (
        "{{ cart['items']|map(attribute='product_name')|join(', ') }} / "
        "{{ cart['items']|sort(attribute='price')|map(attribute='product_id')|list }}",
        "Trail Shoes, Wool Socks / ['sku-2', 'sku-1']",
    ),
    (
        "{{ user.name|replace('Ada', 'A.')|center(20) }}|{{ user.name|truncate(9, true, '..', 0) }}"
        "|{{ 'a\nb'|indent(2, true) }}",
        "    A. Lovelace     |Ada Lov..|  a\n  b",
    ),
    (
        "{{ ('word ' * 5)|wordwrap(11) }}|{{ '%05.1f|%-6s' % (3.14159, 'ab') }}",
        "word word\nword word\nword|003.1|ab    ",
    ),
    (
        "{{ '{:>8}|{:,}|{:.2%}'.format(user.name[:3], 1234567, 0.256) }}|"
        "{{ '{name} has {n} items'.format_map({'name': user.name, 'n': cart.count}) }}",
        "     Ada|1,234,567|25.60%|Ada Lovelace has 3 items",
    ),
    (
        "{% macro li(x) %}<li>{{ x }}</li>{% endmacro %}<ul>{% for i in range(3) %}"
        "{{ li(i ~ '-' ~ user.id) }}{% endfor %}</ul>",
        "<ul><li>0-user-sample-1</li><li>1-user-sample-1</li><li>2-user-sample-1</li></ul>",
    ),
    (
        "{% set ns = namespace(total=0) %}{% for item in cart['items'] %}"
        "{% set ns.total = ns.total + item.quantity %}{% endfor %}{{ ns.total }} {{ [1, 2] + [3] }}"
        " {{ (1, 'a') }} {{ {'k': user.segment} }}",
        "3 [1, 2, 3] (1, 'a') {'k': 'loyal'}",
    ),
    (
        "{% set body %}Dear {{ user.name }},{% endset %}{{ body|length }} {{ body }} "
        "{% filter upper %}shout {{ user.segment }}{% endfilter %}",
        "18 Dear Ada Lovelace, SHOUT LOYAL",
    ),
    (
        "{{ {'a': [1, 2.5, none, true], 'b': user.name}|tojson }} {{ [3, 1, 2]|tojson(indent=2) }}"
        " {{ cart.value|round(1) }} {{ 2 ** 10 }} {{ 7 % 3 }} {{ 'ab' * 3 }}",
        '{"a": [1, 2.5, null, true], "b": "Ada Lovelace"} [\n  3,\n  1,\n  2\n] 59.9 1024 1 ababab',
    ),
    (
        "{{ 42.55|round(1, 'floor') }} {{ 42.55|round }} {{ 1234|round(-2) }} "
        "{{ cart.value|round(2, 'ceil') }} {{ 5|round(-1233) }}",
        "42.5 43.0 1200 59.9 0",
    ),
    (
        "{% for k, v in {'x': 1, 'y': 2}|dictsort %}{{ k }}={{ v }};{% else %}none{% endfor %}"
        "{% for i in range(5) if i is odd %}{{ i }}{% endfor %}{{ range(3)|sum }}"
        "{{ [1,2,3]|select('odd')|list }}{{ 'a,b'.split(',') }}",
        "x=1;y=2;133[1, 3]['a', 'b']",
    ),
    (
        "{{ user.email|urlencode }} {{ 'x'|e }} {{ 'see www.example.com now'|urlize }} "
        "{{ [1, [2, 3]]|pprint }} {{ 'a b c'|wordcount }} {{ '0x1f'|int(base=16) }} "
        "{{ lipsum(1, false, 3, 5)|length > 0 }}",
        'ada%40example.com x see <a href="https://www.example.com" rel="noopener">'
        "www.example.com</a> now [1, [2, 3]] 3 31 True",
    ),
]


@pytest.mark.parametrize(("source", "expected"), ORDINARY)
def test_ordinary_templates_render_exactly_as_before(source: str, expected: str) -> None:
    assert render(source) == expected


def test_large_but_legitimate_work_fits_the_defaults() -> None:
    source = (
        "{% for i in range(200) %}{% for j in range(200) %}{% endfor %}{% endfor %}"
        "{{ ('x' * 900000)|length }} {{ range(50000)|list|length }} {{ 2 ** 4000 > 1 }}"
    )
    assert render(source, budget=NO_CLOCK) == "900000 50000 True"  # the clock: see above


# --- light templates: no meter, still bounded ---------------------------------------------


@pytest.mark.parametrize(
    ("source", "light"),
    [
        ("Hi {{ user.name | default('there') | upper }}", True),
        ("{% set n = cart.count %}{% if n > 1 and user.vip is defined %}{{ n }}{% endif %}", True),
        ("{{ discount_code(10) }} {{ cart.value | money }} {{ fired_at | date }}", True),
        ("{% for i in cart['items'] %}{{ i }}{% endfor %}", False),  # a loop
        ("{{ user.name ~ '!' }}", False),  # builds a value
        ("{{ 2 ** 10 }}", False),
        ("{{ [user.name] }}", False),
        ("{{ user.name.upper() }}", False),  # a method call
        ("{{ image_url('x', a=user.name) }}", False),  # compounding: not a light global
        ("{{ user.name | center(10) }}", False),  # an amplifying filter
        ("{{ cart['items'] | map(attribute='price') | list }}", False),  # iterates
        ("{% macro m() %}x{% endmacro %}{{ m() }}", False),
        ("{% include 't.j2' %}", False),
        ("{{ user.name }}" * 10, True),  # built_chars // string_length values at most
        ("{{ user.name }}" * 11, False),
    ],
)
def test_light_templates_are_straight_line_and_small(source: str, light: bool) -> None:
    templates = Templates(None, secret=SECRET, inline={"t.j2": source})
    env = templates._env
    assert env.is_light(env.parse(source)) is light


def test_default_templates_are_light() -> None:
    templates = Templates(DEFAULTS, secret=SECRET)
    env = templates._env
    for name in DEFAULT_OUTPUTS:
        source = (DEFAULTS / name).read_text()
        assert env.is_light(env.parse(source)), name


def test_light_renders_still_check_sizes_and_output() -> None:
    source = "{{ user.name | upper }}{{ user.name | upper }}{{ user.name | upper }}"
    assert render(source, budget=Budget(output_length=36)) == "ADA LOVELACE" * 3
    with pytest.raises(TemplateError) as info:
        render(source, budget=Budget(output_length=35))
    assert info.value.limit == "output_length"
    with pytest.raises(TemplateError) as info:  # 'ß'.upper() is 'SS': twice as long
        render("{{ user.name | upper }}", with_user(name="ß" * 600_000))
    assert info.value.limit == "string_length"


def test_budgeted_operations_outside_a_render_fail_closed() -> None:
    env = BudgetedSandbox()
    with pytest.raises(Unmetered):
        env.from_string("{% for i in range(3) %}{% endfor %}").render()
    with pytest.raises(Unmetered):
        env.from_string("{{ 'a' ~ 'b' * 2 }}").render()


# --- `when` expressions -------------------------------------------------------------------

CTX: dict[str, Any] = {
    "user": {"id": "u1", "name": "Ana", "segment": "vip"},
    "cart": {"items": [{"product_id": "p1"}], "value": 60.0, "count": 1, "currency": "USD"},
    "event": {"type": "cart_add", "ts": 1000, "properties": {"price": 60}},
    "now": 2000,
    "count": lambda t, w: 3,
    "sum": lambda t, p, w: 99.5,
}

WHEN_ATTACKS: list[tuple[str, str]] = [
    ("(((10**64)**64)**64)**64 > 0", "int_bits"),
    ("2 ** (10 ** 9) > 0", "int_bits"),
    ("('%0200000000d' % 1)|length > 0", "string_length"),
    ("('%.200000000f' % 1.0)|length > 0", "string_length"),
    ("'a'|center(200000000) == ''", "string_length"),
    ("('a' * 10**9)|length > 0", "string_length"),
    ("([1] * 10**9)|length > 0", "list_length"),
    ("user.name|indent(200000000, true) == ''", "string_length"),
    ("('x' * 100000)|join('y' * 100000) == ''", "string_length"),
    ("'%.200000000f'|format(1.0) == ''", "string_length"),
    ("('a' * 100000)|replace('a', 'b' * 100000) == ''", "string_length"),
    ("('a ' * 100000)|wordwrap(1, wrapstring='x' * 100000) == ''", "string_length"),
    ("(user.name * 200000 ~ user.name * 200000)|length > 0", "string_length"),
    ("('x' * 1000000)|list|length > 0", "loop_iterations"),
    ("('x' * 1000000)|map('upper')|list|length > 0", "loop_iterations"),
    ("cart.value|round(-1000000000) == 0", "int_bits"),  # light: checked with no meter too
    ("user.name|round(1000000000, 'ceil') == 0", "int_bits"),
]


@pytest.mark.parametrize(("source", "limit"), WHEN_ATTACKS)
def test_when_attack_is_false_fast_naming_the_limit(source: str, limit: str) -> None:
    expr = compile_expression(source, budget=NO_CLOCK)
    started = time.monotonic()
    ok, reason = expr.evaluate(CTX)
    elapsed = time.monotonic() - started
    assert elapsed < FAST, f"took {elapsed:.2f} s"
    assert ok is False
    assert reason is not None and reason.startswith(f"budget exceeded: {limit} > "), reason
    assert limit_of(reason) == limit


def test_defaults_stop_every_when_attack_fast() -> None:
    for source, _ in WHEN_ATTACKS:
        started = time.monotonic()
        ok, reason = compile_expression(source).evaluate(CTX)
        assert time.monotonic() - started < FAST, source
        assert ok is False and limit_of(reason) is not None, reason


@pytest.mark.parametrize(
    "source",
    ["(((10**64)**64)**64)**64 > 0", "'a'|center(200000000) == ''", "('a' * 10**9)|length > 0"],
)
def test_when_attack_fails_on_the_jinja_path_too(source: str) -> None:
    expr = compile_expression(source)
    started = time.monotonic()
    with pytest.raises(BudgetExceeded):
        expr._compiled(**CTX)
    assert time.monotonic() - started < FAST


def test_simple_when_expressions_skip_the_meter() -> None:
    for source in ["count('a', '1h') >= 3 and cart.value > 50", "user.segment | lower == 'vip'"]:
        expr = compile_expression(source)
        assert expr._metered is False
        assert expr.evaluate(CTX) == (True, None)
    assert compile_expression("cart.value * 2 > 100")._metered is True
    assert compile_expression("user.name | center(9) == ''")._metered is True
    assert compile_expression("cart.value > 1", budget=Budget(string_length=5))._metered is True
    ok, reason = compile_expression("(user.name * 1) | upper == ''").evaluate(
        {**CTX, "user": {"name": "ß" * 600_000}}
    )
    assert ok is False and limit_of(reason) == "string_length"


def test_when_budget_is_a_setting() -> None:
    expr = compile_expression("('x' * 30)|length > 1", budget=Budget(string_length=20))
    ok, reason = expr.evaluate(CTX)
    assert ok is False and limit_of(reason) == "string_length"
    assert compile_expression("('x' * 30)|length > 1").evaluate(CTX) == (True, None)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("2 ** 10 == 1024", True),
        ("cart.value * 2 > 100", True),
        ("'%05.1f' % cart.value == '060.0'", True),
        ("user.name ~ '!' == 'Ana!'", True),
        ("user.name + '?' == 'Ana?'", True),
        ("[1, 2] + [3] == [1, 2, 3]", True),
        ("user.name|center(7) == '  Ana  '", True),
        ("cart.items|map(attribute='product_id')|join(',') == 'p1'", True),
        ("count('a', '1h') >= 3 and cart.value > 50", True),
    ],
)
def test_ordinary_when_expressions_are_unchanged(source: str, expected: bool) -> None:
    expr = compile_expression(source)
    assert expr.evaluate(CTX) == (expected, None)
