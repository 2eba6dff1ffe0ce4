"""The `consent:` and `dedupe:` sections of nudgeflow.yaml (DESIGN §3.2, issue 19).

```yaml
consent:
  unsubscribe_events: [unsubscribe]   # properties.category narrows one to a category
  subscribe_events: [subscribe]
  trait: subscribed                   # traits.subscribed: false unsubscribes from all
dedupe: {ids: 1000, within: 7d}       # event ids remembered per user, and for how long
```

No `consent:` section: no consent check (configs written before it behave as they
did); the shipped defaults have one. Each destination's `category` (config/destinations.py)
is compiled in here: the engine's `Consent` knows which destinations are transactional.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from pydantic import Field

from nudgeflow.config.destinations import Destination
from nudgeflow.config.fields import EventTypes, Name, PositiveDuration, Strict
from nudgeflow.engine.consent import Consent
from nudgeflow.engine.dedupe import DEDUPE_IDS, Dedupe
from nudgeflow.engine.durations import parse_duration

MAX_DEDUPE_IDS = 100_000  # 2 MB of state per user at most (20 bytes an id)


class ConsentModel(Strict):
    unsubscribe_events: EventTypes = ["unsubscribe"]
    subscribe_events: EventTypes = ["subscribe"]
    trait: Name | None = "subscribed"


class DedupeModel(Strict):
    ids: int = Field(DEDUPE_IDS, ge=1, le=MAX_DEDUPE_IDS)
    within: PositiveDuration = "7d"


def consent_problems(model: ConsentModel | None) -> Iterator[str]:
    if model is None:
        return
    both = sorted(set(model.unsubscribe_events) & set(model.subscribe_events))
    if both:
        yield f"consent.subscribe_events: {', '.join(both)} both unsubscribes and subscribes"


def compile_consent(
    model: ConsentModel | None, destinations: Mapping[str, Destination]
) -> Consent | None:
    if model is None:
        return None
    return Consent(
        unsubscribe_events=frozenset(model.unsubscribe_events),
        subscribe_events=frozenset(model.subscribe_events),
        trait=model.trait,
        categories={name: d.category for name, d in destinations.items()},
    )


def compile_dedupe(model: DedupeModel) -> Dedupe:
    return Dedupe(ids=model.ids, within_ms=parse_duration(model.within))
