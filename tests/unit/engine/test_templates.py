"""Sandboxed message templates: personalization, filters, discount codes, errors, escapes."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import pytest

from nudgeflow.engine.formats import format_money
from nudgeflow.engine.templates import (
    SAMPLE_CONTEXT,
    TemplateError,
    Templates,
    image_url,
    make_discount_code,
    verify_discount_code,
)

SECRET = b"test-secret"


def render(source: str, context: dict[str, Any] | None = None, name: str = "t.j2") -> str:
    return Templates(None, secret=SECRET, inline={name: source}).render(
        name, SAMPLE_CONTEXT if context is None else context
    )


def ctx(**changes: Any) -> dict[str, Any]:
    context = copy.deepcopy(dict(SAMPLE_CONTEXT))
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(context.get(key), dict):
            context[key].update(value)
        else:
            context[key] = value
    return context


# --- personalization ----------------------------------------------------------------------


def test_personalized_message_with_cart_items() -> None:
    source = (
        "Hi {{ user.name }}, don't forget:\n"
        "{% for item in cart.items %}- {{ item.product_name }} x{{ item.quantity }}"
        " {{ item.price | money }}\n{% endfor %}"
        "Total {{ cart.value | money }} ({{ cart.count }} items)"
    )
    assert render(source) == (
        "Hi Ada Lovelace, don't forget:\n"
        "- Trail Shoes x1 $49.95\n"
        "- Wool Socks x2 $4.98\n"
        "Total $59.90 (3 items)"
    )


def test_segment_conditional_content() -> None:
    source = (
        "{% if user.segment == 'loyal' %}Welcome back, {{ user.name }}!"
        "{% else %}First order? Take 10% off.{% endif %}"
    )
    assert render(source, ctx(user={"segment": "loyal"})) == "Welcome back, Ada Lovelace!"
    assert render(source, ctx(user={"segment": "first_time"})) == "First order? Take 10% off."


def test_optional_traits_via_default_and_defined() -> None:
    source = "Hi {{ user.nickname | default('there') }}{% if user.vip is defined %}, VIP{% endif %}"
    assert render(source) == "Hi there"
    assert render(source, ctx(user={"nickname": "Ada", "vip": True})) == "Hi Ada, VIP"


def test_event_and_trigger_fields_are_available() -> None:
    source = "{{ rule }}/{{ variant }}/{{ trigger_id }}/{{ step }}/{{ event.type }}"
    assert render(source) == "sample_rule/default/trg_sample/0/cart_add"


def test_sample_context_has_the_shape_the_core_builds() -> None:
    assert set(SAMPLE_CONTEXT) == {
        "user", "cart", "event", "rule", "variant", "trigger_id", "step", "fired_at",
    }  # fmt: skip
    assert {"id", "name", "email", "segment", "timezone", "orders_count"} <= set(
        SAMPLE_CONTEXT["user"]
    )
    assert set(SAMPLE_CONTEXT["cart"]) == {"items", "value", "count", "currency"}
    assert set(SAMPLE_CONTEXT["cart"]["items"][0]) == {
        "product_id", "product_name", "price", "quantity",
    }  # fmt: skip
    assert set(SAMPLE_CONTEXT["event"]) == {"type", "ts", "properties"}


# --- money and dates ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "value,currency,expected",
    [
        (59.9, "USD", "$59.90"),
        (1234.5, "USD", "$1,234.50"),
        (4.975, "USD", "$4.98"),  # decimal half-up, not binary-float 4.97
        (59.9, "EUR", "€59.90"),
        (0.5, "GBP", "£0.50"),
        (1234.5, "JPY", "¥1,235"),  # no minor unit
        (-5, "USD", "-$5.00"),
        (1234.5, "SEK", "1,234.50 SEK"),
        ("19.99", "usd", "$19.99"),
        (10, None, "$10.00"),
    ],
)
def test_money(value: Any, currency: str | None, expected: str) -> None:
    assert format_money(value, currency) == expected


def test_money_filter_defaults_to_cart_currency() -> None:
    assert render("{{ cart.value | money }}", ctx(cart={"currency": "EUR"})) == "€59.90"
    assert render("{{ cart.value | money('GBP') }}", ctx(cart={"currency": "EUR"})) == "£59.90"
    assert render("{{ cart.value | money }}", ctx(cart={"currency": None})) == "$59.90"


def test_money_of_non_number_is_a_template_error() -> None:
    with pytest.raises(TemplateError, match="money"):
        render("{{ user.name | money }}")


def test_date_and_datetime_filters_with_time_zone() -> None:
    context = ctx(fired_at="2024-10-27T00:30:00Z")
    assert render("{{ fired_at | date }}", context) == "2024-10-27"
    assert render("{{ fired_at | datetime }}", context) == "2024-10-27 00:30"
    # Berlin is still on summer time (+2) at 00:30Z on the fall-back day
    assert render("{{ fired_at | datetime('%H:%M %Z', 'Europe/Berlin') }}", context) == (
        "02:30 CEST"
    )
    assert render("{{ fired_at | datetime('%d %b %H:%M', 'Asia/Tokyo') }}", context) == (
        "27 Oct 09:30"
    )
    assert render("{{ fired_at | datetime('%H:%M', 'No/Such_Zone') }}", context) == "00:30"
    assert render("{{ 86400000 | date('%Y-%m-%d') }}") == "1970-01-02"


def test_date_of_garbage_is_a_template_error() -> None:
    with pytest.raises(TemplateError, match=r"t\.j2"):
        render("{{ 'yesterday' | date }}")


# --- discount codes and images ------------------------------------------------------------


def test_discount_code_round_trip() -> None:
    code = render("{{ discount_code(15) }}")
    assert re.fullmatch(r"SAVE15-[2-9A-HJ-NP-Z]{8}", code)
    user_id, rule = SAMPLE_CONTEXT["user"]["id"], SAMPLE_CONTEXT["rule"]
    assert verify_discount_code(code, user_id=user_id, rule=rule, secret=SECRET) == 15
    assert verify_discount_code(f" {code.lower()} ", user_id=user_id, rule=rule, secret=SECRET) == (
        15
    )


def test_discount_code_is_per_user_and_per_rule() -> None:
    a = make_discount_code(10, user_id="u1", rule="cart", secret=SECRET)
    assert a == make_discount_code(10, user_id="u1", rule="cart", secret=SECRET)
    assert a != make_discount_code(10, user_id="u2", rule="cart", secret=SECRET)
    assert a != make_discount_code(10, user_id="u1", rule="browse", secret=SECRET)


def test_tampered_or_foreign_codes_are_rejected() -> None:
    code = make_discount_code(10, user_id="u1", rule="cart", secret=SECRET)
    suffix = code.split("-")[1]
    flipped = ("3" if suffix[0] != "3" else "4") + suffix[1:]
    assert verify_discount_code(code, user_id="u1", rule="cart", secret=SECRET) == 10
    assert (
        verify_discount_code(f"SAVE90-{suffix}", user_id="u1", rule="cart", secret=SECRET) is None
    )
    assert (
        verify_discount_code(f"SAVE10-{flipped}", user_id="u1", rule="cart", secret=SECRET) is None
    )
    assert (
        verify_discount_code(f"SAVE010-{suffix}", user_id="u1", rule="cart", secret=SECRET) is None
    )
    assert verify_discount_code(code, user_id="u2", rule="cart", secret=SECRET) is None
    assert verify_discount_code(code, user_id="u1", rule="browse", secret=SECRET) is None
    assert verify_discount_code(code, user_id="u1", rule="cart", secret=b"other") is None
    for garbage in ("", "SAVE10", "SAVE10-", "hello", "SAVE10-" + "O" * 8):
        assert verify_discount_code(garbage, user_id="u1", rule="cart", secret=SECRET) is None


@pytest.mark.parametrize("percent", ["0", "101", "'10'", "12.5"])
def test_discount_percent_out_of_range_is_a_template_error(percent: str) -> None:
    with pytest.raises(TemplateError, match="discount percent"):
        render(f"{{{{ discount_code({percent}) }}}}")


def test_dynamic_image_url() -> None:
    assert render("{{ image_url('https://img.example.com/cart.png', w=600, name=user.name) }}") == (
        "https://img.example.com/cart.png?w=600&name=Ada+Lovelace"
    )
    assert image_url("https://x/y.png?v=2", sku="a&b", skip=None, retina=True) == (
        "https://x/y.png?v=2&sku=a%26b&retina=true"
    )
    assert image_url("https://x/y.png") == "https://x/y.png"
    assert render("https://x/?q={{ user.name | urlencode }}") == "https://x/?q=Ada%20Lovelace"


# --- JSON templates -----------------------------------------------------------------------


def test_json_template_renders_valid_json() -> None:
    source = '{"text": {{ ("Hi " ~ user.name) | tojson }}, "items": {{ cart.count }}}'
    context = ctx(user={"name": 'Robert "Bobby" </script>'})
    templates = Templates(None, secret=SECRET, inline={"push.json.j2": source})
    text = templates.render("push.json.j2", context)
    assert json.loads(text) == {"text": 'Hi Robert "Bobby" </script>', "items": 3}
    assert templates.render_json("push.json.j2", context)["items"] == 3


def test_json_template_producing_invalid_json_fails_check() -> None:
    templates = Templates(
        None, secret=SECRET, inline={"bad.json.j2": '{"text": "{{ user.name }}",}'}
    )
    with pytest.raises(TemplateError, match=r"'bad.json.j2'.*invalid JSON"):
        templates.check("bad.json.j2")


# --- errors caught at load and at render --------------------------------------------------


@pytest.mark.parametrize(
    "source,line,fragment",
    [
        ("Hello\n{{ usr.name }}", 2, "usr"),  # typo in a variable
        ("Hello\n\n{{ user.nmae }}", 3, "nmae"),  # typo in a trait
        ("Hi\n{% if user.name %}open", 2, "syntax"),  # unclosed block
        ("{{ cart.value | monye }}", 1, "monye"),  # unknown filter
        ("a\nb\n{{ 1 // 0 }}", 3, "ZeroDivisionError"),
    ],
)
def test_check_catches_typos_with_template_and_line(source: str, line: int, fragment: str) -> None:
    templates = Templates(None, secret=SECRET, inline={"welcome.j2": source})
    with pytest.raises(TemplateError) as info:
        templates.check("welcome.j2")
    assert info.value.template == "welcome.j2"
    assert info.value.line == line
    assert f"template 'welcome.j2' line {line}" in str(info.value)
    assert fragment in str(info.value)


def test_missing_template_is_a_template_error() -> None:
    with pytest.raises(TemplateError, match=r"'nope\.j2'.*not found"):
        Templates(None, secret=SECRET).check("nope.j2")


def test_runtime_context_missing_a_field_is_a_template_error_not_a_crash() -> None:
    templates = Templates(None, secret=SECRET, inline={"t.j2": "Hi {{ user.name }}"})
    templates.check("t.j2")  # fine against the sample
    context = ctx()
    del context["user"]["name"]
    with pytest.raises(TemplateError, match="name"):
        templates.render("t.j2", context)


def test_file_templates_inline_override_and_compile_cache(tmp_path: Path) -> None:
    (tmp_path / "cart.j2").write_text("file: {{ user.name }}")
    (tmp_path / "both.j2").write_text("from file")
    templates = Templates(tmp_path, secret=SECRET, inline={"both.j2": "inline"})
    assert templates.render("cart.j2", SAMPLE_CONTEXT) == "file: Ada Lovelace"
    assert templates.render("both.j2", SAMPLE_CONTEXT) == "inline"
    (tmp_path / "cart.j2").write_text("changed")
    assert templates.render("cart.j2", SAMPLE_CONTEXT) == "file: Ada Lovelace"  # compiled once


def test_error_in_included_file_names_that_file(tmp_path: Path) -> None:
    (tmp_path / "footer.j2").write_text("ok\n{{ user.missing }}")
    templates = Templates(
        tmp_path, secret=SECRET, inline={"main.j2": "x\n{% include 'footer.j2' %}"}
    )
    with pytest.raises(TemplateError, match=r"'main.j2' line 2.*missing.*footer.j2"):
        templates.check("main.j2")


# --- sandbox ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "source",
    [
        "{{ ''.__class__.__mro__ }}",
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ cycler.__init__.__globals__ }}",
        "{{ lipsum.__globals__ }}",
        "{{ self._TemplateReference__context }}",
        "{{ user._secret }}",
        "{{ user | attr('__class__') }}",
        "{{ '{0.__class__}'.format(user) }}",
        "{{ '{0.__class__.__init__.__globals__}'.format(cycler) }}",
        "{{ '{id.__class__}'.format_map(user) }}",
        "{{ range(10**9) | list }}",
        "{{ range(10**9) | length }}",
        "{{ 'a' * 10**9 }}",
        "{{ [1] * 10**9 }}",
        "{{ 9 ** 999999999 }}",
        "{{ 2 ** (10 ** 9) }}",
        "{{ cart['items'].append(1) }}",
        "{{ user.update({'id': 'x'}) }}",
        "{{ user.pop('id') }}",
    ],
)
def test_sandbox_blocks_escapes_and_resource_abuse(source: str) -> None:
    with pytest.raises(TemplateError):
        render(source)


def test_sandbox_still_allows_ordinary_expressions() -> None:
    source = (
        "{{ range(3) | list }} {{ 'ab' * 3 }} {{ 2 ** 10 }} "
        "{{ '{} items'.format(cart.count) }} {{ user.get('x', 'y') }}"
    )
    assert render(source) == "[0, 1, 2] ababab 1024 3 items y"


def test_check_all_covers_files_in_subfolders_and_inline(tmp_path: Path) -> None:
    (tmp_path / "email").mkdir()
    (tmp_path / "email" / "cart.j2").write_text("{{ user.name }}")
    (tmp_path / "notes.txt").write_text("not a template")
    templates = Templates(tmp_path, secret=SECRET, inline={"push.j2": "{{ cart.count }}"})
    assert templates.names() == ["email/cart.j2", "push.j2"]
    templates.check_all()
    (tmp_path / "email" / "broken.j2").write_text("{{ user.nmae }}")
    with pytest.raises(TemplateError, match="broken"):
        Templates(tmp_path, secret=SECRET).check_all()
