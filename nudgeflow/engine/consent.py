"""Consent: each user's subscription state and the check before every send (DESIGN §3.2).

The `consent:` section names the events that unsubscribe and subscribe (an optional
`properties.category` narrows them to one category; without it they apply to every
marketing category) and a trait (`traits.subscribed: false` unsubscribes from
everything, `true` subscribes again). Each destination has a category: `marketing`
by default, any other name, or `transactional`, which ignores consent.

The state is one mark per category (ALL for "every category") with the event time of
its last change, in `UserState.consent` (absent: subscribed, so states written before
consent existed decode as subscribed). For a destination of category C the latest
mark among C and ALL decides: an unsubscribe from everything followed by a subscribe
to `news` lets `news` through; a later global subscribe lifts every category's
unsubscribe. A mark older than the one it would replace is ignored (events out of
order do not flip a newer choice), and a repeated choice keeps the time of the change.

Per send (engine/firing.py calls `allowed`): the destinations the user may receive;
none left is the decision `suppressed` with reason `consent` (`suppressed_consent`);
a send with both kinds goes to the transactional ones only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from nudgeflow.engine.state import Sub, UserState
from nudgeflow.engine.timefmt import iso_utc

ALL = "*"  # the mark of an (un)subscribe from every marketing category
MARKETING = "marketing"  # a destination's default category
TRANSACTIONAL = "transactional"  # never subject to consent
REASON = "consent"  # the suppression reason (the decision `suppressed_consent`)


@dataclass(frozen=True, slots=True)
class Consent:
    """The compiled `consent:` section plus each destination's category."""

    unsubscribe_events: frozenset[str] = frozenset()
    subscribe_events: frozenset[str] = frozenset()
    trait: str | None = None
    categories: Mapping[str, str] = field(default_factory=dict)  # destination -> category
    events: frozenset[str] = field(init=False, default=frozenset())

    def __post_init__(self) -> None:
        object.__setattr__(self, "events", self.unsubscribe_events | self.subscribe_events)

    def category(self, destination: str) -> str:
        return self.categories.get(destination, MARKETING)

    def exempt(self, destinations: Sequence[str]) -> bool:
        """True when every destination is transactional (no check needed for this send).
        A send with no destination (the trigger record only) is marketing."""
        return bool(destinations) and all(self.category(d) == TRANSACTIONAL for d in destinations)

    def observe(
        self,
        state: UserState,
        etype: str,
        props: Mapping[str, Any],
        traits: Mapping[str, Any] | None,
        ts: int,
    ) -> None:
        """Apply one event's subscription change (event type and/or trait), if any."""
        if etype in self.events:
            category = props.get("category")
            key = category if isinstance(category, str) and category else ALL
            mark(state, key, etype in self.subscribe_events, ts)
        if traits and self.trait is not None:
            value = traits.get(self.trait)
            if isinstance(value, bool):
                mark(state, ALL, value, ts)

    def allowed(self, state: UserState, destinations: Sequence[str]) -> tuple[str, ...] | None:
        """The destinations this user may receive this send on; None: all of them."""
        marks = state.consent
        if not marks:
            return None
        kept = tuple(
            d
            for d in destinations
            if (c := self.category(d)) == TRANSACTIONAL or subscribed(marks, c)
        )
        if not destinations and not subscribed(marks, MARKETING):
            return ()
        return None if len(kept) == len(destinations) else kept


def mark(state: UserState, key: str, subscribe: bool, ts: int) -> bool:
    """Record a choice for category `key` (ALL: every category) made at event time `ts`;
    True when it changed what the user receives."""
    marks = state.consent
    old = marks.get(key) if marks else None
    if old is not None and old.at > ts:
        return False  # a newer choice stands (events out of order)
    if not marks:
        if subscribe:
            return False  # subscribed is the default: nothing to remember
        marks = state.consent = {}
    elif key != ALL:
        if subscribed(marks, key) == subscribe:
            return False  # already so: keep the time it changed
    elif old is not None and old.subscribed == subscribe and old.at >= _latest(marks):
        return False
    marks[key] = Sub(subscribe, ts)
    return True


def _latest(marks: Mapping[str, Sub]) -> int:
    return max(m.at for m in marks.values())


def subscribed(marks: Mapping[str, Sub] | None, category: str) -> bool:
    """The latest choice that applies to `category` (its own mark or ALL's)."""
    if category == TRANSACTIONAL or not marks:
        return True
    own, every = marks.get(category), marks.get(ALL)
    latest = own if every is None or (own is not None and own.at >= every.at) else every
    return latest is None or latest.subscribed


def view(state: UserState | None) -> dict[str, Any]:
    """For GET /users/<id> and `nudgeflow explain`: the state and when each part changed."""
    marks = (state.consent if state is not None else None) or {}
    every = marks.get(ALL)
    return {
        "subscribed": every is None or every.subscribed,
        "changed_at": iso_utc(every.at) if every is not None else None,
        "categories": {
            name: {"subscribed": m.subscribed, "changed_at": iso_utc(m.at)}
            for name, m in sorted(marks.items())
            if name != ALL
        },
    }
