"""The checks before the sandbox's intercepted binary operators: `**`, `*`, `+` (and `%`).

Invariant: each check runs *before* the operation, from its operands alone, and raises
`BudgetExceeded` if the result could be over int_bits, string_length or list_length, so
`(((10**64)**64)**64)**64` or `'a' * 10**9` is refused without being computed. What the
operation then builds is charged by the caller (`BudgetedSandbox.call_binop`).
"""

from __future__ import annotations

import math
from typing import Any

from nudgeflow.engine.sandbox.budget import INT_BITS, BudgetExceeded
from nudgeflow.engine.sandbox.meter import Meter
from nudgeflow.engine.sandbox.sizes import printf_size, text_size


def check_pow(meter: Meter, base: Any, exponent: Any) -> None:
    if isinstance(base, int):
        meter.allow_bits(base.bit_length(), "**")
    if isinstance(exponent, int):
        meter.allow_bits(exponent.bit_length(), "**")
    if isinstance(base, int) and isinstance(exponent, int) and exponent > 1 and abs(base) > 1:
        if exponent > meter.budget.int_bits:  # |base| >= 2: at least `exponent` bits
            raise BudgetExceeded(INT_BITS, meter.budget.int_bits, exponent, "**")
        meter.allow_bits(math.ceil(exponent * math.log2(abs(base))), "**")


def check_mul(meter: Meter, left: Any, right: Any) -> None:
    if isinstance(left, int) and isinstance(right, int):
        meter.allow_bits(left.bit_length() + right.bit_length(), "*")
        return
    for seq, times in ((left, right), (right, left)):
        if not isinstance(times, int) or times <= 0:
            continue
        if isinstance(seq, (str, bytes)):
            meter.allow_str(len(seq) * times, "*")
        elif isinstance(seq, (list, tuple)):
            meter.allow_list(len(seq) * times, "*")
            if seq:
                meter.allow_str(text_size(seq, meter.budget.string_length) * times, "*")


def check_add(meter: Meter, left: Any, right: Any) -> None:
    if isinstance(left, int) and isinstance(right, int):
        meter.allow_bits(max(left.bit_length(), right.bit_length()) + 1, "+")
    elif isinstance(left, (str, bytes)) and isinstance(right, (str, bytes)):
        meter.allow_str(len(left) + len(right), "+")
    elif isinstance(left, (list, tuple)) and isinstance(right, (list, tuple)):
        meter.allow_list(len(left) + len(right), "+")
        limit = meter.budget.string_length
        meter.allow_str(text_size(left, limit) + text_size(right, limit), "+")


def check_printf(meter: Meter, left: Any, right: Any) -> None:
    if isinstance(left, (str, bytes)):
        meter.allow_str(printf_size(left, right, meter.budget.string_length), "%")
