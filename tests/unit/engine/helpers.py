"""Builders shared by the engine tests: an engine from YAML text, events, a runner."""

from __future__ import annotations

import textwrap
from collections.abc import Iterable
from pathlib import Path

from nudgeflow.config.build import build_engine
from nudgeflow.config.loader import load_config_text
from nudgeflow.engine.actions import Action, Conversion, Decision, Trigger
from nudgeflow.engine.core import Engine
from nudgeflow.engine.state import UserState
from nudgeflow.events.model import Event
from tests.factories import T0, D, H, M, S
from tests.factories import event as ev

__all__ = ["T0", "D", "H", "M", "Run", "S", "ev", "make_engine"]


def make_engine(yaml_text: str) -> Engine:
    config = load_config_text(textwrap.dedent(yaml_text), base_dir=Path("/nonexistent"), env={})
    return build_engine(config, secret=b"test-secret")


class Run:
    """Feeds events (now = event time, like the backtest) and collects actions."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.state: UserState | None = None
        self.actions: list[Action] = []

    def send(self, *events: Event) -> Run:
        for event in events:
            step = self.engine.apply(self.state, event, event.ts)
            self.state = step.state
            self.actions.extend(step.actions)
        return self

    def tick(self, now_ms: int) -> Run:
        assert self.state is not None
        self.actions.extend(self.engine.fire_due(self.state, now_ms).actions)
        return self

    def triggers(self, rule: str | None = None) -> list[Trigger]:
        return [a for a in self.actions if isinstance(a, Trigger) and rule in (None, a.rule)]

    def decisions(self, outcome: str | None = None, rule: str | None = None) -> list[Decision]:
        return [
            a
            for a in self.actions
            if isinstance(a, Decision) and outcome in (None, a.outcome) and rule in (None, a.rule)
        ]

    def conversions(self) -> list[Conversion]:
        return [a for a in self.actions if isinstance(a, Conversion)]


def iso(ms: int) -> str:
    from nudgeflow.engine.timefmt import iso_utc

    return iso_utc(ms)


def names(triggers: Iterable[Trigger]) -> list[tuple[str, int | str]]:
    return [(t.rule, t.step) for t in triggers]
