"""Identity merge (engine/identity.py): every field of the union, the protocol's steps,
and the bad input (self-alias, loops, a 10,000-deep chain) on an in-memory cluster."""

from __future__ import annotations

from collections import deque

import msgspec
import pytest

from nudgeflow.engine import consent, identity
from nudgeflow.engine.actions import Decision, Trigger
from nudgeflow.engine.besttime import record as record_activity
from nudgeflow.engine.dedupe import remember_id, seen
from nudgeflow.engine.state import (
    Armed,
    CartItem,
    Fire,
    Hist,
    Sub,
    UserState,
    decode_state,
    new_state,
)
from tests.unit.engine.helpers import T0, M, S, ev, make_engine

NOW = T0 + 10 * M


def _armed(deadline: int, arm_id: str = "e1") -> Armed:
    return Armed(deadline=deadline, armed_at=T0, arm_id=arm_id, arm_type="cart_add", arm_props={})


def _decision(user: str, at: str) -> Decision:
    return Decision(user_id=user, rule="r", outcome="armed", at=at)


def guest() -> UserState:
    a = new_state("anon-1")
    a.profile = {"email": "guest@x.io", "timezone": "Europe/Paris", "plan": "free"}
    a.cart = {"p1": CartItem("Shoes", 60.0, 2), "p2": CartItem("Hat", 10.0, 1)}
    a.currency = "EUR"
    a.history = [Hist("cart_add", T0 + 1 * S), Hist("page_view", T0 + 3 * S)]
    a.armed = {"abandoned_cart": _armed(T0 + 5 * M, "a-arm"), "browse": _armed(T0 + 7 * M)}
    a.last_fire = {"welcome": T0 + 1 * S, "browse": T0 + 9 * S}
    a.fire_times = [T0 + 1 * S]
    a.fires = [Fire("trg_a", "welcome", "", T0 + 1 * S)]
    a.last_ts = T0 + 3 * S
    a.recent = [_decision("anon-1", "2026-01-01T00:00:01Z")]
    a.activity = record_activity(None, T0, "UTC")
    a.ended = {"welcome": T0 + 2 * S}
    a.consent = {consent.ALL: Sub(False, T0 + 2 * S)}
    a.absorbed = ["older-guest"]
    remember_id(a, "evt-a", T0 + 1 * S)
    return a


def account() -> UserState:
    k = new_state("kim")
    k.profile = {"email": "kim@x.io", "first_name": "Kim"}
    k.cart = {"p1": CartItem("Shoes", 55.0, 1)}
    k.history = [Hist("login", T0 + 2 * S)]
    k.armed = {"abandoned_cart": _armed(T0 + 6 * M, "k-arm")}
    k.last_fire = {"welcome": T0 + 4 * S}
    k.fire_times = [T0 + 4 * S]
    k.fires = [Fire("trg_k", "welcome", "", T0 + 4 * S)]
    k.last_ts = T0 + 2 * S
    k.recent = [_decision("kim", "2026-01-01T00:00:02Z")]
    k.ended = {"welcome": T0 + 1 * S, "promo": T0}
    k.indexed = T0 + 6 * M
    remember_id(k, "evt-k", T0 + 2 * S)
    return k


def test_merge_states_unions_every_field_and_the_known_side_wins_conflicts() -> None:
    out = identity.merge_states(account(), guest(), NOW)
    assert out.user_id == "kim"
    assert out.profile == {
        "email": "kim@x.io", "first_name": "Kim", "timezone": "Europe/Paris", "plan": "free"
    }  # fmt: skip
    assert out.cart == {"p1": CartItem("Shoes", 55.0, 1), "p2": CartItem("Hat", 10.0, 1)}
    assert out.currency == "EUR"
    assert [(h.type, h.ts) for h in out.history] == [
        ("cart_add", T0 + 1 * S), ("login", T0 + 2 * S), ("page_view", T0 + 3 * S)
    ]  # fmt: skip
    # One run per rule: K's abandoned_cart, A's browse at its original deadline.
    assert {r: (a.deadline, a.arm_id) for r, a in out.armed.items()} == {
        "abandoned_cart": (T0 + 6 * M, "k-arm"), "browse": (T0 + 7 * M, "e1")
    }  # fmt: skip
    assert out.next_deadline() == T0 + 6 * M
    assert out.indexed == T0 + 6 * M  # K's timer-index entry: the shell re-files from here
    assert out.last_fire == {"welcome": T0 + 4 * S, "browse": T0 + 9 * S}
    assert out.fire_times == [T0 + 1 * S, T0 + 4 * S]
    assert [f.trigger_id for f in out.fires] == ["trg_a", "trg_k"]
    assert seen(out, "evt-a") and seen(out, "evt-k")
    assert out.last_ts == T0 + 3 * S
    assert [d.user_id for d in out.recent] == ["kim"]  # each side keeps at most its own count
    assert out.activity is not None
    assert out.ended == {"welcome": T0 + 2 * S, "promo": T0}
    assert not consent.subscribed(out.consent, consent.MARKETING)  # A unsubscribed: it wins
    assert out.absorbed == ["older-guest"]


def test_merge_keeps_the_guest_cart_and_value_when_the_account_has_none() -> None:
    a, k = guest(), new_state("kim")
    a.cart_value = 99.0
    out = identity.merge_states(k, a, NOW)
    assert out.cart == a.cart and out.computed_cart_value() == 99.0
    assert out.armed.keys() == a.armed.keys()


@pytest.mark.parametrize(
    ("known", "anonymous", "category", "subscribed"),
    [
        (None, {consent.ALL: Sub(False, 5)}, "marketing", False),
        ({consent.ALL: Sub(False, 5)}, None, "marketing", False),
        ({"news": Sub(True, 9)}, {consent.ALL: Sub(False, 1)}, "news", False),
        ({consent.ALL: Sub(True, 9)}, {"news": Sub(False, 1)}, "news", False),
        ({consent.ALL: Sub(True, 9)}, {"news": Sub(False, 1)}, "promo", True),
        ({consent.ALL: Sub(False, 1), "news": Sub(True, 3)}, {}, "news", True),
        ({consent.ALL: Sub(False, 1), "news": Sub(True, 3)}, {"x": Sub(True, 2)}, "news", True),
        ({"news": Sub(True, 3)}, {"news": Sub(True, 4)}, "news", True),
    ],
)
def test_an_unsubscribe_on_either_side_wins(
    known: dict[str, Sub] | None, anonymous: dict[str, Sub] | None, category: str, subscribed: bool
) -> None:
    merged = identity.merge_consent(known, anonymous)
    assert consent.subscribed(merged, category) is subscribed
    either = [consent.subscribed(side, category) for side in (known, anonymous)]
    assert subscribed == all(either)


def test_request_moves_the_guest_state_into_a_pointer_that_holds_the_record() -> None:
    step = identity.request(guest(), "anon-1", "kim", "mrg_1")
    assert isinstance(step, identity.Move)
    assert step.pointer.alias_of == "kim" and step.pointer.armed == {}
    assert step.pointer.indexed is None  # no timer of A can fire any more
    assert identity.decode_record(step.pointer.moving or b"") == step.record
    assert step.record.state is not None
    assert decode_state(step.record.state).cart == guest().cart
    settled = identity.settled(step.pointer)
    assert (settled.alias_of, settled.moving, settled.profile) == ("kim", None, {})
    # Replayed after a crash that came before the send: the same record again.
    again = identity.request(step.pointer, "anon-1", "kim", "mrg_other")
    assert isinstance(again, identity.Move) and again.record == step.record


@pytest.mark.parametrize(
    ("state", "anonymous", "known", "reason"),
    [
        (None, "kim", "kim", "self"),
        (identity.pointer_to("anon-1", "kim"), "anon-1", "kim", "noop"),
        (identity.pointer_to("anon-1", "kim"), "anon-1", "bob", "already_merged"),
        (UserState(user_id="kim", absorbed=["anon-1"]), "kim", "anon-1", "loop"),
    ],
)
def test_requests_that_change_nothing(
    state: UserState | None, anonymous: str, known: str, reason: str
) -> None:
    assert identity.request(state, anonymous, known, "m") == identity.Refused(reason)


def test_a_guest_without_state_becomes_a_pointer_and_the_account_learns_it() -> None:
    step = identity.request(None, "anon-1", "kim", "mrg_1")
    assert isinstance(step, identity.Move) and step.record.state is None
    out = identity.receive(account(), "kim", step.record, NOW)
    assert isinstance(out, identity.Merged)
    assert out.state.absorbed == ["anon-1"] and out.state.cart == account().cart


def test_receive_applies_once_per_merge_id() -> None:
    step = identity.request(guest(), "anon-1", "kim", "mrg_1")
    assert isinstance(step, identity.Move)
    first = identity.receive(account(), "kim", step.record, NOW)
    assert isinstance(first, identity.Merged)
    assert first.state.absorbed == ["older-guest", "anon-1"]
    assert first.state.merges == ["mrg_1"]
    assert identity.receive(first.state, "kim", step.record, NOW) == identity.Dropped("duplicate")
    fresh = identity.receive(None, "kim", step.record, NOW)  # K had no state yet
    assert isinstance(fresh, identity.Merged) and fresh.state.user_id == "kim"
    assert fresh.state.cart == guest().cart


def test_receive_at_a_pointer_forwards_and_stops_past_the_hop_limit() -> None:
    record = identity.MergeRecord(anonymous="a", known="b", merge_id="m", state=b"\x80")
    hop = identity.receive(identity.pointer_to("b", "c"), "b", record, NOW)
    assert hop == identity.Forward("c", identity.MergeRecord(
        anonymous="a", known="b", merge_id="m", state=b"\x80", hops=1))  # fmt: skip
    deep = identity.MergeRecord(anonymous="a", known="b", merge_id="m", state=b"\x80", hops=8)
    back = identity.receive(identity.pointer_to("b", "c"), "b", deep, NOW)
    assert back == identity.Forward("a", msgspec.structs.replace(deep, hops=9), back=True)
    notice = identity.MergeRecord(anonymous="a", known="b", merge_id="m")
    assert identity.receive(identity.pointer_to("b", "c"), "b", notice, NOW) == identity.Dropped(
        "notice"
    )


# -- the protocol on an in-memory cluster ------------------------------------------------


class Cluster:
    """Partitions as a dict of states; records in flight as a queue (any order)."""

    def __init__(self) -> None:
        self.states: dict[str, UserState] = {}
        self.flight: deque[tuple[str, identity.MergeRecord]] = deque()
        self.sent_back: list[identity.MergeRecord] = []

    def request(self, anonymous: str, known: str) -> str:
        merge_id = f"mrg-{anonymous}-{known}"
        step = identity.request(self.states.get(anonymous), anonymous, known, merge_id)
        if isinstance(step, identity.Refused):
            return step.reason
        self.states[anonymous] = identity.settled(step.pointer)
        self.flight.append((known, step.record))
        return "moved"

    def deliver(self) -> None:
        while self.flight:
            to, record = self.flight.popleft()
            out = identity.receive(self.states.get(to), to, record, NOW)
            if isinstance(out, identity.Merged):
                self.states[to] = out.state
            elif isinstance(out, identity.Forward):
                self.flight.append((out.to, out.record))
                if out.back:
                    self.sent_back.append(record)

    def route(self, user: str) -> str | None:
        """Where an event for `user` is applied (None: the DLQ, past MAX_HOPS)."""
        for _ in range(identity.MAX_HOPS + 1):
            state = self.states.get(user)
            if state is None or state.alias_of is None:
                return user
            user = state.alias_of
        return None

    def carts(self) -> dict[str, set[str]]:
        return {u: set(s.cart) for u, s in self.states.items() if s.cart}


def _with_cart(user: str, item: str) -> UserState:
    state = new_state(user)
    state.cart = {item: CartItem(item, 1.0, 1)}
    return state


def test_self_alias_is_refused_and_changes_nothing() -> None:
    c = Cluster()
    c.states["a"] = _with_cart("a", "x")
    assert c.request("a", "a") == "self"
    assert c.carts() == {"a": {"x"}} and not c.flight


def test_a_loop_in_sequence_is_refused_and_loses_nothing() -> None:
    c = Cluster()
    c.states["a"], c.states["b"] = _with_cart("a", "x"), _with_cart("b", "y")
    assert c.request("a", "b") == "moved"
    c.deliver()
    assert c.request("b", "a") == "loop"
    assert c.carts() == {"b": {"x", "y"}} and c.route("a") == "b"


def test_a_loop_in_sequence_through_stateless_ids_is_refused_too() -> None:
    c = Cluster()
    assert c.request("a", "b") == "moved"  # a pointer and a notice: b knows it absorbed a
    c.deliver()
    assert c.request("b", "a") == "loop"
    assert c.route("a") == "b" and c.route("b") == "b"


@pytest.mark.parametrize("first", ["a", "b"])
def test_opposite_merges_in_flight_at_once_end_under_the_smaller_id(first: str) -> None:
    c = Cluster()
    c.states["a"], c.states["b"] = _with_cart("a", "x"), _with_cart("b", "y")
    assert c.request("a", "b") == "moved" and c.request("b", "a") == "moved"
    if first == "b":
        c.flight.reverse()
    c.deliver()
    assert c.carts() == {"a": {"x", "y"}}
    assert c.route("a") == "a" and c.route("b") == "a" and not c.sent_back


def test_a_three_way_loop_in_flight_loses_nothing() -> None:
    c = Cluster()
    for user, item in (("a", "x"), ("b", "y"), ("c", "z")):
        c.states[user] = _with_cart(user, item)
    assert [c.request("a", "b"), c.request("b", "c"), c.request("c", "a")] == ["moved"] * 3
    c.deliver()
    assert set().union(*c.carts().values()) == {"x", "y", "z"}


def test_a_10000_deep_alias_chain_is_bounded_and_loses_nothing() -> None:
    c = Cluster()
    n = 10_000
    for i in range(n):
        c.states[f"u{i}"] = _with_cart(f"u{i}", f"item{i % 50}")
    for i in range(n - 1):  # u0 -> u1 -> ... -> u9999, each merge delivered in turn
        assert c.request(f"u{i}", f"u{i + 1}") == "moved"
        c.deliver()
    last = c.states[f"u{n - 1}"]
    assert last.cart.keys() == {f"item{i}" for i in range(50)}
    assert len(last.absorbed or []) == identity.MAX_ABSORBED
    assert len(last.merges or []) == identity.MAX_MERGES
    # Each pointer names the next id: an event follows at most MAX_HOPS of them, then
    # goes to the DLQ (alias_chain_too_long); close to the end it arrives.
    assert c.route(f"u{n - 2}") == f"u{n - 1}"
    assert c.route(f"u{n - 1 - identity.MAX_HOPS}") == f"u{n - 1}"
    assert c.route("u0") is None
    # Closing the loop at the far end: the record would go round 10,000 pointers; past
    # MAX_HOPS it goes home instead, and the last id keeps its profile.
    assert c.request(f"u{n - 1}", "u0") == "moved"
    c.deliver()
    assert c.route(f"u{n - 1}") == f"u{n - 1}"
    assert c.states[f"u{n - 1}"].cart.keys() == last.cart.keys()


def test_a_chain_made_in_reverse_order_is_pointers_only() -> None:
    c = Cluster()
    for i in reversed(range(100)):
        assert c.request(f"v{i}", f"v{i + 1}") == "moved"
    c.deliver()
    assert c.route("v99") == "v100" and c.route("v0") is None and not c.sent_back


# -- with the real engine: the guest's reminder goes to the account, once ----------------

RULES = """
rules:
  - name: abandoned_cart
    trigger: cart_add
    inactivity: 30m
    activity: [cart_add]
    cancel_on: [purchase]
"""


def test_the_guest_reminder_fires_once_for_the_account_with_cart_and_email() -> None:
    engine = make_engine(RULES)
    cart_add = ev("cart_add", T0, "e1", "anon-1", price=120, product_id="p9")
    a = engine.apply(None, cart_add, T0).state
    identify = ev("identify", T0 + M, "e2", "kim", traits={"email": "kim@x.io"})
    k = engine.apply(None, identify, T0 + M).state
    step = identity.request(a, "anon-1", "kim", "mrg_1")
    assert isinstance(step, identity.Move)
    merged = identity.receive(k, "kim", step.record, T0 + 2 * M)
    assert isinstance(merged, identity.Merged)
    due = T0 + 31 * M
    pointer = identity.settled(step.pointer)
    assert engine.fire_due(pointer, due).actions == []  # nothing left to fire under A
    fired = [t for t in engine.fire_due(merged.state, due).actions if isinstance(t, Trigger)]
    assert [(t.rule, t.user_id) for t in fired] == [("abandoned_cart", "kim")]
    assert fired[0].fields["user_email"] == "kim@x.io"
    assert fired[0].fields["cart_value"] == 120
