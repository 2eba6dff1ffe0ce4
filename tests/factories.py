"""One place that builds the records tests need: events, user states and triggers.

Each builder fills every field with a plausible default and takes keyword overrides,
so a test names only what it is about.
"""

from __future__ import annotations

from typing import Any

from nudgeflow.engine.actions import Trigger
from nudgeflow.engine.state import UserState
from nudgeflow.events.model import Event

T0 = 1_714_564_800_000  # 2024-05-01T12:00:00Z
S, M, H, D = 1_000, 60_000, 3_600_000, 86_400_000


def event(
    type_: str, ts: int = T0, event_id: str | None = None, user: str = "u1", **props: Any
) -> Event:
    """An event of `type_` for `user`; `traits=` goes to traits, the rest to properties."""
    traits = props.pop("traits", {})
    assert isinstance(traits, dict)
    return Event(
        user_id=user, type=type_, ts=ts, event_id=event_id, properties=props, traits=traits
    )


def state(user: str = "u1", **fields: Any) -> UserState:
    """An empty user state for `user`, with any field overridden."""
    return UserState(user_id=user, **fields)


def trigger(
    trigger_id: str = "t-1",
    *,
    rule: str = "abandoned_cart",
    user_id: str = "u1",
    variant: str = "standard",
    step: int = 0,
    at: str = "2026-01-01T10:30:00Z",
    armed_at: str = "2026-01-01T10:00:00Z",
    message: str = "hi",
    destinations: list[str] | None = None,
    **fields: Any,
) -> Trigger:
    """A trigger fired on time at `at` (deadline and fired_at), armed at `armed_at`."""
    return Trigger(
        trigger_id=trigger_id,
        rule=rule,
        user_id=user_id,
        variant=variant,
        step=step,
        fired_at=at,
        deadline=at,
        armed_at=armed_at,
        late=False,
        lateness_s=0.0,
        message=message,
        destinations=list(destinations) if destinations is not None else ["zapier"],
        **fields,
    )
