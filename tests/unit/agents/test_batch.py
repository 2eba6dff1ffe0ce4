"""The batch path's pure part (agents/batch.py): a segment's events grouped per user give
exactly the records and the stored state that one record at a time gives (issue 23.1)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from nudgeflow.agents.batch import Item, compute, waiting
from nudgeflow.agents.plan import plan
from nudgeflow.engine.actions import Decision, Trigger
from nudgeflow.engine.state import UserState, decode_state, encode_state
from nudgeflow.events.model import Event
from tests.unit.engine.helpers import T0, M, ev, make_engine

CONFIG = """
templates: {t.j2: "Hi"}
rules:
  - {name: cart, trigger: cart_add, inactivity: 30m, activity: [cart_add, view], template: t.j2}
  - {name: now, trigger: ping, template: t.j2}
  - {name: bought, trigger: purchase, delay: 1h, template: t.j2}
"""


def events() -> list[Event]:
    """Two users interleaved; u1 has several events, a repeated id and an immediate trigger."""
    return [
        ev("cart_add", T0, "a1", user="u1", product_id="p", price=10),
        ev("view", T0 + M, "a2", user="u2"),
        ev("ping", T0 + 2 * M, "a3", user="u1"),
        ev("cart_add", T0 + 2 * M, "a1", user="u1", product_id="p", price=10),  # duplicate
        ev("purchase", T0 + 3 * M, "a4", user="u1", order_id="o", value=10),
        ev("ping", T0 + 4 * M, "b1", user="u2"),
        ev("view", T0 + 5 * M, "a5", user="u1"),
    ]


def one_by_one(
    items: list[Event], stored: dict[bytes, bytes], version: int
) -> tuple[list[list[Any]], dict[bytes, tuple[int | None, int | None]]]:
    """The per-record path: load (decode), apply, plan, store (encode), per event."""
    engine = make_engine(CONFIG)
    records: list[list[Any]] = []
    index: dict[bytes, tuple[int | None, int | None]] = {}
    for event in items:
        key = event.user_id.encode()
        raw = stored.get(key)
        state = decode_state(raw) if raw else None
        step = engine.apply(state, event, event.ts)
        if step.duplicate:
            records.append([])
            continue
        planned = plan(step.state, step.actions, version=version)
        records.append([value for _, value in planned.records])
        first = index.get(key, (planned.indexed_before, None))[0]
        index[key] = (first, planned.indexed)
        stored[key] = planned.state
    return records, index


def batched(
    items: list[Event], stored: dict[bytes, bytes], version: int, hook: Any = None
) -> tuple[list[Item], dict[bytes, Any]]:
    engine = make_engine(CONFIG)
    work = [Item(e.user_id.encode(), e, e.ts) for e in items]

    def load(item: Item) -> UserState | None:
        raw = stored.get(item.user_key)
        return decode_state(raw) if raw else None

    return work, compute(work, load, engine, version, hook)


def test_a_batch_gives_the_same_records_and_state_as_one_record_at_a_time() -> None:
    expected, index = one_by_one(events(), {}, version=3)
    work, runs = batched(events(), {}, version=3)
    assert [[value for _, value in item.records] for item in work] == expected
    assert [item.duplicate for item in work] == [False, False, False, True, False, False, False]
    per_record_state: dict[bytes, bytes] = {}
    one_by_one(events(), per_record_state, version=3)
    for key, run in runs.items():
        assert not run.alone and run.plan is not None
        assert run.plan.state == per_record_state[key]  # the same bytes
        assert (run.plan.indexed_before, run.plan.indexed) == index[key]
    triggers = [a for item in work for a, _ in item.records if isinstance(a, Trigger)]
    assert [(t.rule, t.user_id) for t in triggers] == [("now", "u1"), ("now", "u2")]
    fired = [
        a.rule for item in work for a, _ in item.records if isinstance(a, Decision)
    ]  # every decision kept, in order, with the live version
    assert fired and all(
        a.rule_version == 3 for item in work for a, _ in item.records if isinstance(a, Decision)
    )


def test_from_a_stored_state_too() -> None:
    first, rest = events()[:3], events()[3:]
    stored: dict[bytes, bytes] = {}
    one_by_one(first, stored, version=0)
    reference = dict(stored)
    expected, _ = one_by_one(rest, reference, version=0)
    work, runs = batched(rest, stored, version=0)
    assert [[value for _, value in item.records] for item in work] == expected
    assert {k: r.plan.state for k, r in runs.items() if r.plan} == {
        k: v for k, v in reference.items() if k in runs
    }


def test_a_failing_event_sends_only_its_user_record_by_record() -> None:
    def hook(event_type: str) -> None:
        if event_type == "purchase":
            raise RuntimeError("poison")

    work, runs = batched(events(), {}, version=0, hook=hook)
    assert runs[b"u1"].alone and runs[b"u1"].plan is None
    assert not runs[b"u2"].alone and runs[b"u2"].plan is not None
    alone, _ = one_by_one([e for e in events() if e.user_id == "u2"], {}, version=0)
    assert [[v for _, v in item.records] for item in work if item.user_key == b"u2"] == alone


def test_an_item_that_failed_before_or_a_merged_away_user_goes_alone() -> None:
    stored = {b"u2": encode_state(UserState(user_id="u2", alias_of="u9"))}
    work = [Item(e.user_id.encode(), e, e.ts) for e in events()]
    work[4].alone = True  # u1's purchase has a stored attempt count
    runs = compute(
        work,
        lambda item: decode_state(stored[item.user_key]) if item.user_key in stored else None,
        make_engine(CONFIG),
    )
    assert runs[b"u1"].alone and runs[b"u2"].alone
    assert all(run.plan is None for run in runs.values())


def test_only_duplicates_store_nothing() -> None:
    stored: dict[bytes, bytes] = {}
    one_by_one(events()[:1], stored, version=0)
    _, runs = batched([events()[3]], stored, version=0)  # a1 again
    assert runs[b"u1"].plan is None and not runs[b"u1"].alone


def test_an_overrun_goes_through_compute() -> None:
    class Overrun(BaseException):
        pass

    def hook(event_type: str) -> None:
        raise Overrun

    with pytest.raises(Overrun):
        batched(events(), {}, version=0, hook=hook)


@dataclass
class _Message:
    generation_id: int


@dataclass
class _Event:
    message: _Message


@dataclass
class _Flow:
    active: bool = True

    def is_active(self) -> bool:
        return self.active


@dataclass
class _App:
    consumer_generation_id: int = 7
    flow_control: _Flow = field(default_factory=_Flow)


@dataclass
class _Queue:
    _queue: list[Any]


def test_taking_more_only_when_the_next_record_is_there_and_will_be_handed_out() -> None:
    app = _App()
    assert not waiting(_Queue([]), app)
    assert waiting(_Queue([_Event(_Message(7))]), app)
    assert not waiting(_Queue([_Event(_Message(6))]), app)  # skipped: a past generation
    assert not waiting(_Queue(["a value"]), app)
    app.flow_control.active = False
    assert not waiting(_Queue([_Event(_Message(7))]), app)
