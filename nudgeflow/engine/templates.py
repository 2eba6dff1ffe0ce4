"""Sandboxed Jinja2 message rendering: personalization, discount codes, image URLs, and
tracked links and open pixels (`track_link(url)`, `track_open()`: engine/links.py).

Templates are operator-authored but render user-supplied data, and a typo must fail at
start (``Templates.check`` against ``SAMPLE_CONTEXT``), not at the 3 a.m. send. Every
failure, whatever its cause, surfaces as one exception type, ``TemplateError``, whose
message names the template and line, so the core can turn it into a decision with a
reason instead of crashing.

Templates whose name ends in ``.json.j2`` must render to valid JSON (use ``| tojson`` for
values); ``render`` returns the text either way, ``render_json`` the parsed value.
Optional traits work with ``{{ user.first_name | default('there') }}`` or
``{% if user.vip is defined %}``; a bare missing name is an error (StrictUndefined).

The `money`, `date` and `datetime` filters are formats.py's. Every render runs under a
`Budget` (sandbox/budget.py: loop iterations, string/list/int sizes, output length, wall
time); going over it is a TemplateError whose reason names the limit
("budget exceeded: loop_iterations > 100000") and whose `limit` is that Budget field, so one
hostile or buggy template costs one send (decision `render_failed`), never the worker.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import jinja2
from jinja2 import ChoiceLoader, FileSystemLoader, FunctionLoader, StrictUndefined

from nudgeflow.engine.formats import format_date, format_datetime, money_filter
from nudgeflow.engine.links import CLICK, OPEN, Link, LinkSigner
from nudgeflow.engine.sandbox.budget import DEFAULT_BUDGET, OUTPUT_LENGTH, Budget, BudgetExceeded
from nudgeflow.engine.sandbox.environment import BudgetedSandbox
from nudgeflow.engine.sandbox.meter import run_metered

JSON_SUFFIX = ".json.j2"

SAMPLE_CONTEXT: Mapping[str, Any] = {
    "user": {
        "id": "user-sample-1",
        "name": "Ada Lovelace",
        "email": "ada@example.com",
        "segment": "loyal",
        "timezone": "Europe/London",
        "orders_count": 3,
    },
    "cart": {
        "items": [
            {"product_id": "sku-1", "product_name": "Trail Shoes", "price": 49.95, "quantity": 1},
            {"product_id": "sku-2", "product_name": "Wool Socks", "price": 4.975, "quantity": 2},
        ],
        "value": 59.90,
        "count": 3,
        "currency": "USD",
    },
    "event": {
        "type": "cart_add",
        "ts": "2024-05-01T12:00:00Z",
        "properties": {"product_id": "sku-2", "product_name": "Wool Socks", "price": 4.975},
    },
    "rule": "sample_rule",
    "variant": "default",
    "trigger_id": "trg_sample",
    "step": 0,
    "fired_at": "2024-05-01T12:30:00Z",
}


class TemplateError(Exception):
    """Any template failure (missing, syntax, undefined name, sandbox, runtime, bad JSON,
    over budget). `limit` is the Budget field a render went over, else None."""

    def __init__(
        self, template: str, message: str, line: int | None = None, *, limit: str | None = None
    ) -> None:
        where = f"template {template!r}" + (f" line {line}" if line else "")
        super().__init__(f"{where}: {message}")
        self.template = template
        self.line = line
        self.reason = message
        self.limit = limit


# --- discount codes -----------------------------------------------------------------------

_CODE_ALPHABET = "23456789ABCDEFGHJKLMNPQRSTUVWXYZ"  # 32 symbols: no 0/O, 1/I/L confusion
_CODE_LENGTH = 8  # 40 bits of HMAC: guessing one valid code takes ~10^12 tries
_CODE_RE = re.compile(rf"^SAVE(\d{{1,3}})-([{_CODE_ALPHABET}]{{{_CODE_LENGTH}}})$")


def _code_suffix(secret: bytes, user_id: str, rule: str, percent: int) -> str:
    digest = hmac.new(secret, f"{user_id}|{rule}|{percent}".encode(), hashlib.sha256).digest()
    number = int.from_bytes(digest[:8], "big")
    chars = []
    for _ in range(_CODE_LENGTH):
        number, index = divmod(number, len(_CODE_ALPHABET))
        chars.append(_CODE_ALPHABET[index])
    return "".join(chars)


def make_discount_code(percent: int, *, user_id: str, rule: str, secret: bytes) -> str:
    """Per-user, per-rule code such as "SAVE10-7K3QX9AB"; verifiable without storage."""
    if isinstance(percent, bool) or not isinstance(percent, int) or not 1 <= percent <= 100:
        raise ValueError(f"discount percent must be an integer 1..100, got {percent!r}")
    return f"SAVE{percent}-{_code_suffix(secret, user_id, rule, percent)}"


def verify_discount_code(code: str, *, user_id: str, rule: str, secret: bytes) -> int | None:
    """The percent a code grants if it was issued to this user for this rule, else None."""
    match = _CODE_RE.match(code.strip().upper()) if isinstance(code, str) else None
    if match is None:
        return None
    percent = int(match.group(1))
    if not 1 <= percent <= 100 or match.group(1) != str(percent):
        return None
    expected = _code_suffix(secret, user_id, rule, percent)
    return percent if hmac.compare_digest(expected, match.group(2)) else None


# --- images -------------------------------------------------------------------------------


def image_url(base: str, **params: Any) -> str:
    """Dynamic image URL: `base` plus the url-encoded params (None values left out)."""
    query = urlencode(
        [
            (key, "true" if v is True else "false" if v is False else v)
            for key, v in params.items()
            if v is not None
        ]
    )
    if not query:
        return base
    return f"{base}{'&' if '?' in base else '?'}{query}"


def _link(context: jinja2.runtime.Context, kind: str, url: str, ttl_ms: int) -> Link:
    """The send a template renders for (its context), as a tracked link valid `ttl_ms`
    from the send's time: the same token on every render of the same send."""
    user = context.get("user")
    user_id = user.get("id") if isinstance(user, Mapping) else None
    tid, rule, variant = context.get("trigger_id"), context.get("rule"), context.get("variant")
    step, fired_at = context.get("step"), context.get("fired_at")
    if not all(isinstance(v, str) for v in (user_id, tid, rule, variant, fired_at)):
        raise ValueError("track_link needs user.id, trigger_id, rule, variant and fired_at")
    if isinstance(step, bool) or not isinstance(step, int | str):
        raise ValueError("track_link needs the step in the context")
    sent = datetime.fromisoformat(str(fired_at).replace("Z", "+00:00"))
    expires = int(sent.timestamp() * 1000) + ttl_ms
    return Link(kind, str(tid), str(user_id), str(rule), step, str(variant), url, expires)


# --- environment --------------------------------------------------------------------------


class _Sandbox(BudgetedSandbox):
    """The budgeted immutable sandbox (sandbox/environment.py), with mapping keys winning
    over method names."""

    def getattr(self, obj: Any, attribute: str) -> Any:
        """Keys before attributes for mappings, so `cart.items` is the cart's items, not
        `dict.items`; everything else goes through the sandbox's checks."""
        if isinstance(obj, Mapping):
            try:
                return obj[attribute]
            except (KeyError, TypeError):
                pass
        return super().getattr(obj, attribute)


class Templates:
    """Loads, checks and renders message templates from a directory and/or inline sources.

    Inline templates win over files of the same name. Compiled templates are cached.
    Each render (and each `check`) runs under `budget`.
    """

    def __init__(
        self,
        directory: Path | None,
        *,
        secret: bytes,
        inline: Mapping[str, str] | None = None,
        sample_context: Mapping[str, Any] = SAMPLE_CONTEXT,
        budget: Budget = DEFAULT_BUDGET,
        links: LinkSigner | None = None,
    ) -> None:
        self._secret = secret
        self._links = links if links is not None else LinkSigner(secret)
        self._budget = budget
        self._directory = Path(directory) if directory is not None else None
        self._sample = sample_context
        self._inline = dict(inline or {})
        loaders: list[jinja2.BaseLoader] = [FunctionLoader(self._inline_source)]
        if directory is not None:
            loaders.append(FileSystemLoader(str(directory)))
        self._env = _Sandbox(
            budget=budget,
            loader=ChoiceLoader(loaders),
            undefined=StrictUndefined,
            autoescape=False,
            auto_reload=False,
            cache_size=-1,
            keep_trailing_newline=True,
        )
        light: dict[str, Callable[..., Any]] = {
            "money": money_filter,
            "date": format_date,
            "datetime": format_datetime,
        }
        self._env.add_filters(light, light=True)  # output bounded by the input, not compounding
        self._env.globals.update(
            discount_code=self._discount_code,
            image_url=image_url,
            track_link=self._track_link,
            track_open=self._track_open,
        )
        self._env.light_globals = frozenset({"discount_code"})  # a fixed-size result
        self._compiled: dict[str, jinja2.Template] = {}
        self._globals: dict[str, dict[str, Any]] = {}  # per template, flattened once
        self._light: dict[str, bool] = {}  # per template: renders with no meter (sandbox/light.py)

    def _inline_source(self, name: str) -> tuple[str, str, Callable[[], bool]] | None:
        source = self._inline.get(name)
        if source is None:
            return None
        return source, f"<inline {name}>", lambda: True

    @jinja2.pass_context
    def _discount_code(self, context: jinja2.runtime.Context, percent: int) -> str:
        user = context.get("user")
        user_id = user.get("id") if isinstance(user, Mapping) else None
        rule = context.get("rule")
        if not isinstance(user_id, str) or not isinstance(rule, str):
            raise ValueError("discount_code needs user.id and rule in the context")
        return make_discount_code(percent, user_id=user_id, rule=rule, secret=self._secret)

    @jinja2.pass_context
    def _track_link(self, context: jinja2.runtime.Context, url: str) -> str:
        """`<base>/r/<token>`: a click on it records `message_clicked`, then 302 to `url`."""
        return self._links.click_url(_link(context, CLICK, url, self._links.ttl_ms))

    @jinja2.pass_context
    def _track_open(self, context: jinja2.runtime.Context) -> str:
        """`<base>/o/<token>.gif`: loading it records `message_opened`."""
        return self._links.open_url(_link(context, OPEN, "", self._links.ttl_ms))

    def _template(self, name: str) -> jinja2.Template:
        cached = self._compiled.get(name)
        if cached is None:
            try:
                cached = self._env.get_template(name)
            except jinja2.TemplateNotFound as exc:
                raise TemplateError(name, f"not found ({exc.message or exc.name})") from exc
            except jinja2.TemplateSyntaxError as exc:
                raise TemplateError(name, f"syntax error: {exc.message}", exc.lineno) from exc
            except Exception as exc:
                raise TemplateError(name, f"cannot load: {exc}") from exc
            self._light[name] = self._is_light(name)
            self._compiled[name] = cached
            self._globals[name] = dict(cached.globals)
        return cached

    def _is_light(self, name: str) -> bool:
        """Whether `name` can render without a meter (sandbox/light.py); parsed again, once.
        Anything unexpected means metered, which is always safe."""
        loader = self._env.loader
        try:
            assert loader is not None
            source, _, _ = loader.get_source(self._env, name)
            return self._env.is_light(self._env.parse(source, name))
        except Exception:
            return False

    def names(self) -> list[str]:
        """Every template this instance can render: inline ones and `*.j2` files."""
        found = set(self._inline)
        if self._directory is not None:
            found.update(
                path.relative_to(self._directory).as_posix()
                for path in self._directory.rglob("*.j2")
                if path.is_file()
            )
        return sorted(found)

    def check_all(self) -> None:
        """`check` every template (start-up); the first failure raises TemplateError."""
        for name in self.names():
            self.check(name)

    def check(self, name: str) -> None:
        """Compile and render against the sample context; raises TemplateError."""
        self.render(name, self._sample)

    def render(self, name: str, context: Mapping[str, Any]) -> str:
        """Render to text (validated JSON for `.json.j2`); any failure is a TemplateError."""
        template = self._template(name)
        try:
            if self._light[name]:
                text = _render_light(template, self._globals[name], context, self._budget)
            else:
                text = run_metered(self._budget, _render, template, self._globals[name], context)
        except jinja2.TemplateSyntaxError as exc:  # a broken {% include %} target
            raise TemplateError(name, f"syntax error: {exc.message}", exc.lineno) from exc
        except BudgetExceeded as exc:
            line, where = _template_frame(exc, template)
            detail = str(exc) + (f" (in {where})" if where else "")
            raise TemplateError(name, detail, line, limit=exc.limit) from exc
        except Exception as exc:
            line, where = _template_frame(exc, template)
            detail = f"{type(exc).__name__}: {exc}" + (f" (in {where})" if where else "")
            raise TemplateError(name, detail, line) from exc
        if name.endswith(JSON_SUFFIX):
            try:
                json.loads(text)
            except ValueError as exc:
                raise TemplateError(name, f"rendered invalid JSON: {exc}") from exc
        return text

    def render_json(self, name: str, context: Mapping[str, Any]) -> Any:
        """Render a `.json.j2` template and parse it."""
        text = self.render(name, context)
        try:
            return json.loads(text)
        except ValueError as exc:
            raise TemplateError(name, f"rendered invalid JSON: {exc}") from exc


def _render(
    template: jinja2.Template, template_globals: dict[str, Any], context: Mapping[str, Any]
) -> str:
    """`template.render(context)` without re-reading the globals' ChainMap on every call.

    `Template.render` flattens the environment and template globals into a new
    dict per render (a ChainMap walk, a third of a small template's cost); here
    they are flattened once and the render context is built from a copy. Runs under
    the caller's meter (`run_metered`); `concat` is the budget's, counting the output.
    """
    ctx = template.new_context({**template_globals, **context}, shared=True)
    try:
        return template.environment.concat(template.root_render_func(ctx))
    except Exception:
        template.environment.handle_exception()  # rewrites the traceback to template lines


def _render_light(
    template: jinja2.Template,
    template_globals: dict[str, Any],
    context: Mapping[str, Any],
    budget: Budget,
) -> str:
    """`_render` for a light template: no meter, the output checked once it is joined
    (a light template's output is bounded by construction; see sandbox/light.py)."""
    ctx = template.new_context({**template_globals, **context}, shared=True)
    try:
        text = "".join(template.root_render_func(ctx))
    except Exception:
        template.environment.handle_exception()
    if len(text) > budget.output_length:
        raise BudgetExceeded(OUTPUT_LENGTH, budget.output_length, len(text), "output")
    return text


def _template_frame(exc: BaseException, template: jinja2.Template) -> tuple[int | None, str]:
    """Line of the innermost template frame (Jinja rewrites tracebacks so that template
    frames carry template lines), and that template's file if it is not the one rendered."""
    own = template.filename or "<template>"
    line: int | None = None
    where = ""
    tb = exc.__traceback__
    while tb is not None:
        frame_globals = tb.tb_frame.f_globals
        if frame_globals.get("__jinja_exception__") is exc:
            filename = str(frame_globals.get("__file__", ""))
            line, where = tb.tb_lineno, ("" if filename == own else filename)
        tb = tb.tb_next
    return line, where
