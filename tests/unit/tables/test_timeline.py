"""The per-user audit timeline: bounded, newest kept, round-trips through msgpack."""

from __future__ import annotations

from nudgeflow.delivery.records import DeliveryAttempt
from nudgeflow.engine.actions import Decision
from nudgeflow.tables.timeline import (
    Timeline,
    decode,
    encode,
    with_decisions,
    with_delivery,
)


def _decision(i: int, outcome: str = "armed") -> Decision:
    return Decision(
        user_id="u1",
        rule="cart",
        outcome=outcome,  # type: ignore[arg-type]
        at=f"2024-05-01T12:00:{i:02d}.000Z",
        detail={"step": 0, "n": i},
    )


def _attempt(i: int) -> DeliveryAttempt:
    return DeliveryAttempt(
        trigger_id=f"trg_{i}",
        rule="cart",
        destination="hook",
        attempt=1,
        outcome="delivered",
        latency_s=0.01,
        at="2024-05-01T12:00:00Z",
        status=200,
    )


def test_keeps_only_the_newest_decisions_in_order() -> None:
    tl = Timeline()
    for i in range(7):
        tl = with_decisions(tl, [_decision(i)], limit=5)
    assert [d.detail["n"] for d in tl.decisions] == [2, 3, 4, 5, 6]


def test_a_batch_larger_than_the_limit_keeps_its_tail() -> None:
    tl = with_decisions(Timeline(), [_decision(i) for i in range(8)], limit=3)
    assert [d.detail["n"] for d in tl.decisions] == [5, 6, 7]


def test_deliveries_are_bounded_separately_from_decisions() -> None:
    tl = with_decisions(Timeline(), [_decision(0, "fired")])
    for i in range(4):
        tl = with_delivery(tl, _attempt(i), limit=2)
    assert [a.trigger_id for a in tl.deliveries] == ["trg_2", "trg_3"]
    assert [d.outcome for d in tl.decisions] == ["fired"]


def test_round_trip_preserves_decisions_and_attempts() -> None:
    tl = with_delivery(with_decisions(Timeline(), [_decision(1, "suppressed")]), _attempt(9))
    back = decode(encode(tl))
    assert back == tl
    assert back.decisions[0].outcome == "suppressed"
    assert back.deliveries[0].status == 200
