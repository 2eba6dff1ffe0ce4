"""UserState: compact msgpack round trip and bounded collections; the dedupe window."""

from __future__ import annotations

from nudgeflow.engine.dedupe import (
    DEDUPE_IDS,
    DEDUPE_WITHIN_MS,
    Dedupe,
    remember_id,
    seen,
    seen_count,
)
from nudgeflow.engine.state import (
    MAX_HISTORY,
    Armed,
    apply_cart,
    count_events,
    decode_state,
    encode_state,
    new_state,
    record_history,
    sum_property,
)

H = 3_600_000


def test_round_trip_keeps_everything() -> None:
    s = new_state("u1")
    s.profile.update(name="Ana", timezone="Europe/Lisbon")
    apply_cart(s, "cart_add", {"product_id": "p1", "price": 12.5, "quantity": 2, "currency": "EUR"})
    record_history(s, "purchase", 1000, {"amount": "40.5", "note": "x"}, frozenset({"amount"}), H)
    s.armed["r"] = Armed(
        deadline=5,
        armed_at=1,
        arm_id="e1",
        arm_type="cart_add",
        arm_props={"a": [1]},
        step=1,
        variant="fast",
        last_activity=2,
    )
    s.last_fire["r"] = 7
    remember_id(s, "e1", 1000)
    back = decode_state(encode_state(s))
    assert back == s
    assert back.history[0].props == {"amount": 40.5}  # only the numeric property sum() needs
    assert back.computed_cart_value() == 25.0 and back.currency == "EUR"
    assert back.next_deadline() == 5


def test_empty_state_is_tiny() -> None:
    assert len(encode_state(new_state("user-42"))) < 16


def test_dedupe_ids_are_bounded_by_count_and_time() -> None:
    s = new_state("u")
    small = Dedupe(ids=64, within_ms=86_400_000)
    for i in range(200):
        s.last_ts = i
        remember_id(s, f"e{i}", i, small)
    assert seen_count(s) == 64 and seen(s, "e199") and seen(s, "e136") and not seen(s, "e135")
    s.last_ts = 1000 + small.within_ms
    remember_id(s, "late", s.last_ts, small)
    assert seen_count(s) == 1 and seen(s, "late") and not seen(s, "e199")
    assert not seen(s, None)


def test_the_default_dedupe_keeps_1000_ids_or_7_days() -> None:
    assert DEDUPE_IDS >= 1000 and DEDUPE_WITHIN_MS == 7 * 86_400_000
    s = new_state("u")
    day = 86_400_000
    for i in range(1200):  # 1,200 ids within a day: the last 1,000 stay
        s.last_ts = i
        remember_id(s, f"e{i}", i)
    assert seen_count(s) == 1000 and seen(s, "e200") and not seen(s, "e199")
    s.last_ts = 6 * day  # yesterday's batch re-sent six days later is still a duplicate
    remember_id(s, "next", s.last_ts)
    assert seen(s, "e500")
    s.last_ts = 8 * day  # beyond 7 days: forgotten
    remember_id(s, "later", s.last_ts)
    assert not seen(s, "e500") and seen(s, "next") and seen(s, "later")


def test_dedupe_state_with_1000_ids_is_20_bytes_an_id_and_round_trips() -> None:
    s = new_state("user-000001")
    for i in range(1000):
        remember_id(s, f"4b0f6f8e-8d2c-4b7e-9a51-{i:012d}", 1_700_000_000_000 + i)
    size = len(encode_state(s))
    assert 20_000 <= size < 20_100  # README "Dedupe": the dedupe window's cost per user
    back = decode_state(encode_state(s))
    assert seen(back, "4b0f6f8e-8d2c-4b7e-9a51-000000000999") and not seen(back, "x")


def test_a_state_written_before_issue_19_keeps_its_ids() -> None:
    import msgspec

    old = msgspec.msgpack.encode({"u": "u", "s": ["a", "b"], "st": [1000, 2000], "t": 2000})
    s = decode_state(old)
    assert seen(s, "a") and seen(s, "b") and not seen(s, "c")
    s.last_ts = 3000
    remember_id(s, "c", 3000)  # folds the old list into the keys, in order
    assert s.seen_ids == [] and seen_count(s) == 3 and seen(s, "a") and seen(s, "c")


def test_history_is_bounded_by_window_and_count_and_sorted() -> None:
    s = new_state("u")
    for i in range(10):
        s.last_ts = i * 20 * 60_000
        record_history(s, "v", s.last_ts, {}, frozenset(), H)
    # events older than one hour before the newest are gone
    assert [h.ts for h in s.history] == [i * 20 * 60_000 for i in range(7, 10)]
    record_history(s, "v", 7 * 20 * 60_000 + 1, {}, frozenset(), H)  # out of order
    assert [h.ts for h in s.history] == sorted(h.ts for h in s.history)
    for _ in range(MAX_HISTORY * 2):
        record_history(s, "v", s.last_ts, {}, frozenset(), 10 * H)
    assert len(s.history) == MAX_HISTORY


def test_count_and_sum_use_half_open_windows() -> None:
    s = new_state("u")
    for ts, amount in [(0, 10), (H, 20), (2 * H, 30)]:
        s.last_ts = ts
        record_history(s, "purchase", ts, {"amount": amount}, frozenset({"amount"}), 10 * H)
    assert count_events(s, "purchase", H, 2 * H) == 1  # (1h, 2h]
    assert count_events(s, "purchase", H + 1, 2 * H) == 2
    assert sum_property(s, "purchase", "amount", 3 * H, 2 * H) == 60
    assert count_events(s, "purchase", 10 * H, H) == 2  # later events are not counted


def test_cart_projection() -> None:
    s = new_state("u")
    apply_cart(s, "cart_add", {"product_id": 1, "price": 10, "product_name": "A"})
    apply_cart(s, "cart_add", {"product_id": 1, "quantity": 2})
    apply_cart(s, "cart_add", {"product_id": "2", "price": "5.5"})
    assert (s.cart_count(), s.computed_cart_value()) == (4, 35.5)
    apply_cart(s, "cart_remove", {"product_id": 1, "quantity": 1})
    assert s.cart["1"].qty == 2
    apply_cart(s, "cart_remove", {"product_id": "2"})
    assert list(s.cart) == ["1"]
    apply_cart(s, "checkout_started", {"cart_value": 99})
    assert s.computed_cart_value() == 99
    apply_cart(s, "purchase", {})
    assert s.cart == {} and s.computed_cart_value() == 0
