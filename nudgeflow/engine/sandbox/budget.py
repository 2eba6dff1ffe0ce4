"""The limits of one render or one `when` evaluation, and the errors for going over them.

Invariant: a budget failure is always a `BudgetExceeded` (never a ValueError or TypeError,
which Jinja swallows in places) whose message starts "budget exceeded: <limit> > ", so the
limit survives being turned into a reason string (`limit_of`). The limits (`Budget` fields):

- ``loop_iterations``: iterations of every `{% for %}` (and of its `if` filter) plus the items
  that iterating filters (`map`, `select`, `list`, `join`, `sort`, ...) walk, summed over the
  whole render, so nesting multiplies nothing;
- ``string_length`` / ``list_length`` / ``int_bits``: checked *before* an operation that could
  build a big value, from its operands (`**`, `*`, `%`, `+`, `~`, `str.format`, `center`,
  `ljust`, `rjust`, `zfill`, `expandtabs`, `join`, `replace`, `translate`, `split`, `indent`,
  `wordwrap`, `format`, `urlize`, `tojson`, `pprint`, `batch`, `slice`, `range`, `lipsum`),
  and again on every filter and call result. A list or dict also counts against
  string_length by the text it would print as, so shared references cannot multiply it;
- ``built_chars``: characters created over the whole render, so a million strings each under
  the string limit cannot add up to gigabytes held in a list or a captured block;
- ``output_length``: the rendered text, and each captured block (`{% set %}`, macro, filter);
- ``wall_time_ms``: checked at each iteration, call, filter application and format field.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields

LOOP_ITERATIONS = "loop_iterations"
STRING_LENGTH = "string_length"
LIST_LENGTH = "list_length"
INT_BITS = "int_bits"
OUTPUT_LENGTH = "output_length"
BUILT_CHARS = "built_chars"
WALL_TIME_MS = "wall_time_ms"


@dataclass(frozen=True, slots=True)
class Budget:
    """Limits for one render or one `when` evaluation; the defaults fit any real message
    (an email is well under 100 KB) with a wide margin, and stop an attack in milliseconds."""

    loop_iterations: int = 100_000
    """Loop iterations plus items walked by iterating filters, over the whole render."""
    string_length: int = 1_000_000
    """Characters in any one string, and in the text any one list or dict prints as."""
    list_length: int = 100_000
    """Items in any one list, tuple, dict or range."""
    int_bits: int = 4_096
    """Bits in any one integer (about 1,233 decimal digits)."""
    output_length: int = 1_000_000
    """Characters rendered, and in any one captured block (set block, macro, filter block)."""
    built_chars: int = 10_000_000
    """Characters created over the whole render (about 40 MB at worst)."""
    wall_time_ms: int = 250
    """Wall-clock time for the whole render or evaluation."""

    def __post_init__(self) -> None:
        for field in fields(self):
            value = getattr(self, field.name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"budget {field.name} must be a positive integer, got {value!r}")


DEFAULT_BUDGET = Budget()
LIMITS = frozenset(field.name for field in fields(Budget))
_PREFIX = "budget exceeded: "
_LIMIT_RE = re.compile(r"budget exceeded: ([a-z_]+) > ")


class BudgetExceeded(Exception):
    """A render or evaluation went over `limit` (a `Budget` field name).

    Deliberately not a ValueError or TypeError: Jinja swallows those in places (`|int`
    returns its default), and a budget must never be swallowed.
    """

    def __init__(self, limit: str, maximum: int, needed: int | None = None, what: str = "") -> None:
        if what and needed is not None:
            detail = f" ({what} needs {needed})"
        elif what:
            detail = f" ({what})"
        elif needed is not None:
            detail = f" (needs {needed})"
        else:
            detail = ""
        super().__init__(f"{_PREFIX}{limit} > {maximum}{detail}")
        self.limit = limit
        self.maximum = maximum
        self.needed = needed
        self.what = what


class Unmetered(RuntimeError):
    """A budgeted operation ran with no render or evaluation in progress (for instance when
    Jinja tries to fold a constant at compile time): refused rather than run unbounded."""


def limit_of(reason: str | None) -> str | None:
    """The limit a failure reason names if it is a budget failure, else None; for the
    engine's decision (a `when` expression reports failures as a reason string)."""
    if reason is None:
        return None
    match = _LIMIT_RE.match(reason)
    return match.group(1) if match is not None and match.group(1) in LIMITS else None
