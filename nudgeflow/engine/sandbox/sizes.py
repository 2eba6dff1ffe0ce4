"""How big a value would be, predicted without building it.

Invariant: every function here is pure (no meter, no environment) and returns an upper
bound on (or about) the size it predicts, never less, and stops walking once past the
`limit` it is given, so measuring a hostile value costs no more than the limit it is
checked against. Shared references are measured once, a cycle counts as past the limit.
"""

from __future__ import annotations

import re
from collections.abc import ItemsView, Iterable, KeysView, Mapping, Sequence, ValuesView
from itertools import chain
from typing import Any

from jinja2.environment import TemplateModule
from jinja2.utils import Namespace
from markupsafe import Markup

_SEQUENCES = (list, tuple, set, frozenset, KeysView, ValuesView)
_MAPPINGS = (dict, Mapping, ItemsView)


def _leaf_size(item: Any) -> int:
    """About len(repr(item)) inside a container, for anything that holds no other values."""
    if isinstance(item, str):
        return len(item) + 2
    if item is None or isinstance(item, bool):
        return 5
    if isinstance(item, int):
        return item.bit_length() // 3 + 2
    if isinstance(item, float):
        return 24
    if isinstance(item, (bytes, bytearray)):
        return 4 * len(item) + 3
    if isinstance(item, TemplateModule):  # prints as everything it rendered
        return sum(map(len, item._body_stream))
    return 64


_CONTAINERS = (*_SEQUENCES, *_MAPPINGS, Namespace)
_LEAVES = frozenset({str, int, float, bool, type(None), bytes, Markup})


def _is_container(item: Any) -> bool:
    cls = item.__class__
    if cls in _LEAVES:  # exact types first: the ABCs in _CONTAINERS are slow to test
        return False
    return cls is list or cls is dict or cls is tuple or isinstance(item, _CONTAINERS)


def _overhead(item: Any) -> int:
    if isinstance(item, Namespace):
        return 13
    return 2 + (4 if isinstance(item, _MAPPINGS) else 2) * len(item)


def _children(item: Any) -> Iterable[Any]:
    if isinstance(item, Namespace):
        return (object.__getattribute__(item, "_Namespace__attrs"),)
    if isinstance(item, ItemsView):
        item = getattr(item, "mapping", None) or getattr(item, "_mapping", {})
    if isinstance(item, (dict, Mapping)):
        return chain(item.keys(), item.values())
    return item


def shape(value: Any, limit: int) -> tuple[int, int, int, int]:
    """(text size, items, depth, widest key) of `value` as it would print; the size is about
    len(str(value)). Each distinct container is measured once, so lists sharing references
    (`[a, a]` nested sixty deep) cost as little as they hold, and the walk stops once the
    size passes `limit` (a cycle counts as past it)."""
    if not _is_container(value):
        return (len(value) if isinstance(value, str) else _leaf_size(value)), 1, 0, 0
    memo: dict[int, tuple[int, int, int, int]] = {}
    keep: list[Any] = []  # measured containers stay alive, so their ids stay theirs
    path: set[int] = set()
    stack: list[tuple[Any, bool]] = [(value, False)]
    while stack:
        item, measured = stack.pop()
        key = id(item)
        if not measured:
            if key in memo:
                continue
            if key in path:
                return limit + 1, 1, 0, 0
            overhead = _overhead(item)
            if overhead > limit:
                return overhead, 1, 0, 0
            path.add(key)
            stack.append((item, True))
            stack.extend(
                (child, False)
                for child in _children(item)
                if _is_container(child) and id(child) not in memo
            )
            continue
        path.discard(key)
        size, count, depth, widest = _overhead(item), 1, 0, 0
        keys = isinstance(item, _MAPPINGS)
        width = len(item) if keys else 0
        for i, child in enumerate(_children(item)):
            if _is_container(child):
                child_size, child_count, child_depth, child_widest = memo[id(child)]
            else:
                child_size, child_count, child_depth, child_widest = _leaf_size(child), 1, 0, 0
            if i < width:  # a key
                child_widest = max(child_widest, child_size)
            size += child_size
            count += child_count
            depth = max(depth, child_depth + 1)
            widest = max(widest, child_widest)
            if size > limit:
                return size, count, depth, widest
        memo[key] = (size, count, depth, widest)
        keep.append(item)
    return memo[id(value)]


def text_size(value: Any, limit: int) -> int:
    """About len(str(value)) without building it; stops once past `limit`."""
    if isinstance(value, str):
        return len(value)
    if not _is_container(value):
        return _leaf_size(value)
    return shape(value, limit)[0]


def layout_size(value: Any, limit: int, step: int | None) -> int:
    """Upper bound on `value` laid out one item per line: indented by `step` per level
    (json.dumps with indent), or by the widest key plus its punctuation (pprint) if None."""
    size, count, depth, widest = shape(value, limit)
    per_level = (widest + 4) if step is None else step
    return size + count * (depth * per_level + 2)


def _number_size(value: Any) -> int:
    """Characters a number formats to in any base with any flags, before width/precision."""
    if isinstance(value, int):
        return value.bit_length() // 3 + 8
    return 330  # a float: %f of 1e308 has 309 digits


def _digits(text: str | None) -> int:
    if not text:
        return 0
    return int(text) if len(text) <= 18 else 10**18


def _printf_number(fmt: str, i: int, args: Sequence[Any], used: int) -> tuple[int, int, int]:
    """Width or precision at fmt[i]: digits or `*` (taken from args); (value, i, used)."""
    if i < len(fmt) and fmt[i] == "*":
        value = args[used] if used < len(args) else 0
        return (abs(value) if isinstance(value, int) else 0), i + 1, used + 1
    j = i
    while j < len(fmt) and "0" <= fmt[j] <= "9":
        j += 1
    return _digits(fmt[i:j]), j, used


def printf_size(fmt: str | bytes, args: Any, limit: int) -> int:
    """Upper bound on len(fmt % args), reading widths, precisions and values as Python's
    printf-style formatting does; stops once past `limit`."""
    text = fmt.decode("latin-1") if isinstance(fmt, bytes) else fmt
    positional: Sequence[Any] = args if isinstance(args, tuple) else (args,)
    mapping = args if isinstance(args, Mapping) else None
    total = len(text)
    used = 0
    i = text.find("%")
    while i >= 0 and total <= limit:
        i += 1
        key: str | None = None
        if i < len(text) and text[i] == "(":
            depth, j = 1, i + 1
            while j < len(text) and depth:
                depth += {"(": 1, ")": -1}.get(text[j], 0)
                j += 1
            key, i = text[i + 1 : j - 1], j
        while i < len(text) and text[i] in "-+ #0":
            i += 1
        width, i, used = _printf_number(text, i, positional, used)
        precision = 0
        if i < len(text) and text[i] == ".":
            precision, i, used = _printf_number(text, i + 1, positional, used)
        while i < len(text) and text[i] in "hlL":
            i += 1
        if i >= len(text):
            break
        conversion = text[i]
        if conversion == "%":
            total += max(width, 1)
        else:
            if key is not None:
                value = mapping.get(key) if mapping is not None else None
            else:
                value = positional[used] if used < len(positional) else None
                used += 1
            if conversion in "sra":
                size = text_size(value, limit)
                if conversion != "s" and isinstance(value, str):
                    size = 10 * size + 2  # repr/ascii escapes
            else:
                size = _number_size(value) + precision
            total += max(width, size)
        i = text.find("%", i + 1)
    return total


_FORMAT_SPEC = re.compile(r"(?:.?[<>=^])?[-+ ]?z?#?0?(\d*)[,_]?(?:\.(\d*))?[a-zA-Z%]?", re.DOTALL)


def spec_size(value: Any, spec: str, limit: int) -> int:
    """Upper bound on len(format(value, spec)) for str.format fields."""
    numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
    base = _number_size(value) * 4 // 3 + 8 if numeric else text_size(value, limit)
    if not spec:
        return base
    match = _FORMAT_SPEC.fullmatch(spec)
    if match is None:  # a type's own mini-language, such as datetime's strftime codes
        return base + 16 * len(spec)
    return max(_digits(match.group(1)), base + _digits(match.group(2)))


_LINE_BREAKS = "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"


def line_count(text: str) -> int:
    """At least the lines of `text`: every line break str.splitlines knows, plus one."""
    return sum(map(text.count, _LINE_BREAKS)) + 1


def replace_size(text: Any, old: Any, new: Any, count: Any) -> int | None:
    """len(text.replace(old, new, count)) at most, or None if that is not a str/bytes replace."""
    kind = str if isinstance(text, str) else bytes if isinstance(text, bytes) else None
    if kind is None or not isinstance(old, kind) or not isinstance(new, kind):
        return None
    hits = text.count(old) if old else len(text) + 1
    if isinstance(count, int) and count >= 0:
        hits = min(hits, count)
    return len(text) + hits * max(len(new) - len(old), 0)
