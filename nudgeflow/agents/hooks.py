"""Test-only fault hooks: a poison record on demand, in a real worker.

The fault suite needs a record whose handling fails, or runs for tens of seconds, the
way a runaway template does, without depending on one particular sandbox bug. With the
`test_hook` setting (off by default) every event of one type makes the engine call
`spin` (burn CPU in Python bytecode for N seconds, as a slow render does) or `raise`.
The hook runs where the engine runs, so it is stopped by what stops the engine.
"""

from __future__ import annotations

import time
from dataclasses import dataclass


class HookError(RuntimeError):
    """What `raise:TYPE` raises."""


@dataclass(frozen=True, slots=True)
class Hook:
    action: str  # "spin" or "raise"
    event_type: str
    seconds: float = 0.0

    def __call__(self, event_type: str) -> None:
        if event_type != self.event_type:
            return
        if self.action == "raise":
            raise HookError(f"test hook: events of type {event_type!r} fail")
        end = time.monotonic() + self.seconds
        while time.monotonic() < end:  # Python bytecode, like a render: interruptible
            pass


def parse(spec: str | None) -> Hook | None:
    """'spin:TYPE:SECONDS' or 'raise:TYPE' (the setting's pattern checked the shape)."""
    if not spec:
        return None
    action, event_type, *rest = spec.split(":")
    return Hook(action, event_type, float(rest[0]) if rest else 0.0)
