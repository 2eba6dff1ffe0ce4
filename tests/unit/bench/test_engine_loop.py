"""The throughput scenario's engine figure (bench/engine_loop.py) does the evaluate agent's
per-event work: every bench event applied through the state codec, with the same states
and triggers as the engine applied to states kept in memory."""

from __future__ import annotations

import msgspec

from nudgeflow.agents.plan import plan
from nudgeflow.bench import engine_loop
from nudgeflow.bench.workloads import keyed, shop_events
from nudgeflow.engine.actions import Trigger
from nudgeflow.engine.state import UserState, decode_state
from nudgeflow.events.parse import parse_event

NOW = 1_800_000_000_000
PARTITIONS = 4


def test_every_shop_event_goes_through_decode_apply_and_encode() -> None:
    engine = engine_loop.default_engine()
    records = list(shop_events(1_000, 150, NOW))
    states: dict[bytes, bytes] = {}
    result = engine_loop.run(engine, records, PARTITIONS, now_ms=NOW, states=states)

    counts = result.events, result.applied, result.duplicates, result.rejected
    assert counts == (1_000, 1_000, 0, 0)
    assert result.triggers > 0  # the default rules fire on the shop mix
    assert result.actions >= result.triggers
    assert result.per_cpu_s > 0

    # The same events with each user's state kept as an object (no codec in between):
    # the loop's stored bytes are the same states, and it counted the same triggers.
    reference = engine_loop.default_engine()
    kept: dict[bytes, UserState] = {}
    triggers = 0
    for key, value in records:
        step = reference.apply(kept.get(key), parse_event(value, now_ms=NOW), NOW)
        planned = plan(step.state, step.actions)
        kept[key] = step.state
        triggers += sum(1 for action, _ in planned.records if isinstance(action, Trigger))
    assert result.triggers == triggers
    assert set(states) == set(kept)
    for key, state in kept.items():
        assert msgspec.to_builtins(decode_state(states[key])) == msgspec.to_builtins(state)


def test_a_repeated_event_is_a_duplicate_and_a_bad_record_is_rejected() -> None:
    login = keyed({"event_id": "e1", "user_id": "u1", "type": "login", "ts": NOW})
    bad = (b"u2", b'{"user_id": "u2", "type": "login"}')  # no event_id, no ts
    result = engine_loop.run(
        engine_loop.default_engine(), [login, login, bad], PARTITIONS, now_ms=NOW
    )
    assert (result.events, result.applied, result.duplicates, result.rejected) == (3, 1, 1, 1)
