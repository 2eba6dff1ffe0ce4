"""Per-user state and its projections (profile, cart, history, dedupe).

One `UserState` is stored per user (msgpack in RocksDB) and rewritten on every
event, so it is a msgspec Struct with short wire names, array-like inner
records and bounded collections. The projection functions here are pure data
bookkeeping; rule semantics live in `core.py`.
"""

from __future__ import annotations

from bisect import bisect_right
from operator import attrgetter
from typing import Any

import msgspec
from msgspec import field

from nudgeflow.engine.actions import Decision
from nudgeflow.engine.besttime import BestTime

MAX_HISTORY = 256  # history entries kept (also bounded by the rules' longest window)
MAX_CART_ITEMS = 100
MAX_RECENT_FIRES = 32  # fired triggers kept for open/click/conversion attribution


class CartItem(msgspec.Struct, array_like=True):
    name: str | None
    price: float
    qty: int


class Hist(msgspec.Struct, array_like=True):
    """One remembered event: type, time, and only the numeric properties sum() needs."""

    type: str
    ts: int
    props: dict[str, float] = {}


class Armed(msgspec.Struct, array_like=True):
    """One run of a rule: the node it is at (`step`, an index into the rule's program,
    and `name`, the node's name if it has one), when that node is due, and what armed it
    (for ids, templates and expressions).

    Fields are only ever appended (with defaults), so states written by older versions
    decode unchanged.
    """

    deadline: int
    armed_at: int  # arming event time
    arm_id: str | None  # arming event id (None: the producer sent none)
    arm_type: str
    arm_props: dict[str, Any]
    step: int = 0
    variant: str = ""
    last_activity: int = 0
    deferred: bool = False  # re-armed at the end of quiet hours
    instance: str = ""  # the `instance` value ("" : one run per user)
    flags: int = 0  # TIMED | UNREPORTED
    loops: int = 0  # jumps back taken: sends on a loop get a new trigger id each pass
    # The node's `name` when it has one (None: unnamed, or a state from before issue 20
    # item 3): under a new rules version the run goes on at the node of that name, else at
    # `step` (steps.py `resume`). One byte when None.
    name: str | None = None


TIMED = 1  # the node's `send_at` was resolved: send when due, do not time it again
UNREPORTED = 2  # the run's arrival at this node is not yet in a decision (funnel `entered`)


class Fire(msgspec.Struct, array_like=True):
    """A produced trigger, kept for opens/clicks and experiment conversions."""

    trigger_id: str
    rule: str
    variant: str
    at: int
    flags: int = 0  # CONVERTED | OPENED | CLICKED
    step: int | str = 0  # the step that sent it (its label), for the per-step funnel


CONVERTED, OPENED, CLICKED = 1, 2, 4


class Sub(msgspec.Struct, array_like=True):
    """A subscription choice for one category (engine/consent.py) and when it was made."""

    subscribed: bool
    at: int  # event time of the change


class UserState(msgspec.Struct, kw_only=True, omit_defaults=True):
    user_id: str = field(name="u")
    profile: dict[str, Any] = field(default_factory=dict, name="p")
    cart: dict[str, CartItem] = field(default_factory=dict, name="c")
    cart_value: float | None = field(default=None, name="cv")  # producer's override
    currency: str | None = field(default=None, name="cu")
    history: list[Hist] = field(default_factory=list, name="h")
    armed: dict[str, Armed] = field(default_factory=dict, name="a")
    last_fire: dict[str, int] = field(default_factory=dict, name="lf")  # rule -> ms (cooldown)
    fire_times: list[int] = field(default_factory=list, name="ft")  # all rules (global cap)
    fires: list[Fire] = field(default_factory=list, name="f")
    # Dedupe (engine/dedupe.py): the recent event ids' 8-byte keys, sorted (looked up by
    # binary search), and the same keys with their event time (4 bytes, s) in arrival
    # order (the oldest leave first); None until the first id. `s`/`st` are the lists
    # states written before issue 19 hold; they are folded in at the user's next event.
    seen_keys: bytearray | None = field(default=None, name="sk")
    seen_ring: bytearray | None = field(default=None, name="sr")
    seen_ids: list[str] = field(default_factory=list, name="s")
    seen_ts: list[int] = field(default_factory=list, name="st")
    last_ts: int = field(default=0, name="t")  # largest event time applied
    # The shell's audit timeline: the last decisions written to `<prefix>.decisions`,
    # kept here so an event costs one table write, not two (tables/timeline.py).
    recent: list[Decision] = field(default_factory=list, name="r")
    # The shell's bookkeeping: the deadline under which the timer index holds this
    # user (never later than next_deadline(); see nudgeflow/tables/timers.py).
    indexed: int | None = field(default=None, name="ix")
    # Journeys: the user's hour-of-week activity histogram (only when a rule sends at
    # the best hour) and, per run key, when a run ended (entered, for `reentry: never`).
    activity: BestTime | None = field(default=None, name="bt")
    ended: dict[str, int] | None = field(default=None, name="e")  # made on first use
    # Consent (DESIGN §3.2): category ("*": all marketing) -> the latest choice. Absent
    # (every state written before consent existed): subscribed to everything.
    consent: dict[str, Sub] | None = field(default=None, name="cs")
    # Identity (engine/identity.py): an id merged into another keeps only `alias_of` (and,
    # until it is sent, the merge record `moving`); a user remembers the ids it absorbed
    # and the merges it applied (bounded). All absent on every other state.
    alias_of: str | None = field(default=None, name="al")
    moving: bytes | None = field(default=None, name="mv")
    absorbed: list[str] | None = field(default=None, name="ab")
    merges: list[str] | None = field(default=None, name="mg")

    def next_deadline(self) -> int | None:
        """The earliest deadline of any run (the timer index key), or None."""
        earliest: int | None = None
        for a in self.armed.values():  # a plain loop: usually 0-3 entries
            if earliest is None or a.deadline < earliest:
                earliest = a.deadline
        return earliest

    def computed_cart_value(self) -> float:
        if self.cart_value is not None:
            return self.cart_value
        return round(sum(i.price * i.qty for i in self.cart.values()), 2)

    def cart_count(self) -> int:
        return sum(i.qty for i in self.cart.values())


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(UserState)


def encode_state(state: UserState) -> bytes:
    return _encoder.encode(state)


def decode_state(data: bytes) -> UserState:
    return _decoder.decode(data)


def new_state(user_id: str) -> UserState:
    return UserState(user_id=user_id)


# -- projections ---------------------------------------------------------------------------


def merge_traits(state: UserState, traits: dict[str, Any]) -> None:
    if traits:
        state.profile.update(traits)


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def _quantity(props: dict[str, Any]) -> int:
    q = _number(props.get("quantity"))
    return int(q) if q is not None and q > 0 else 1


def _product_key(props: dict[str, Any]) -> str | None:
    for key in ("product_id", "sku", "product_name"):
        value = props.get(key)
        if value is not None and value != "":
            return str(value)
    return None


def apply_cart(state: UserState, event_type: str, props: dict[str, Any]) -> None:
    """cart_add / cart_remove / purchase update the cart; `cart_value` overrides.

    The producer's `properties.cart_value` wins until the next cart change that
    does not carry one (then the computed value is current again); a purchase
    empties the cart.
    """
    currency = props.get("currency")
    if isinstance(currency, str) and currency:
        state.currency = currency
    if event_type == "purchase":
        state.cart.clear()
        state.cart_value = None
        return
    if event_type == "cart_add":
        key = _product_key(props)
        if key is not None:
            item = state.cart.get(key)
            price = _number(props.get("price"))
            name = props.get("product_name")
            if item is None:
                if len(state.cart) < MAX_CART_ITEMS:
                    state.cart[key] = CartItem(
                        name=str(name) if name is not None else None,
                        price=price or 0.0,
                        qty=_quantity(props),
                    )
            else:
                item.qty += _quantity(props)
                if price is not None:
                    item.price = price
                if name is not None:
                    item.name = str(name)
    elif event_type == "cart_remove":
        key = _product_key(props)
        item = state.cart.get(key) if key is not None else None
        if item is not None and key is not None:
            q = _number(props.get("quantity"))
            item.qty = item.qty - int(q) if q is not None and q > 0 else 0
            if item.qty <= 0:
                del state.cart[key]
    value = _number(props.get("cart_value"))
    if value is not None:
        state.cart_value = value
    elif event_type in ("cart_add", "cart_remove"):
        state.cart_value = None


def record_history(
    state: UserState,
    event_type: str,
    ts: int,
    props: dict[str, Any],
    keep_props: frozenset[str],
    horizon_ms: int,
) -> None:
    """Append one event (kept sorted by time) and drop what no window can reach."""
    numeric: dict[str, float] = {}
    for name in keep_props:
        value = _number(props.get(name))
        if value is not None:
            numeric[name] = value
    entry = Hist(event_type, ts, numeric)
    hist = state.history
    if not hist or hist[-1].ts <= ts:
        hist.append(entry)
    else:  # out of order: insert in place (short list)
        i = len(hist)
        while i > 0 and hist[i - 1].ts > ts:
            i -= 1
        hist.insert(i, entry)
    floor = state.last_ts - horizon_ms
    drop = max(0, len(hist) - MAX_HISTORY)
    while drop < len(hist) and hist[drop].ts <= floor:
        drop += 1
    if drop:
        del hist[:drop]


def count_events(state: UserState, event_type: str, window_ms: int, at_ms: int) -> int:
    """Events of `event_type` with time in (at - window, at]."""
    hist = state.history
    n = 0
    for i in range(_first_after(hist, at_ms - window_ms), len(hist)):
        h = hist[i]
        if h.ts > at_ms:
            break
        if h.type == event_type:
            n += 1
    return n


def sum_property(state: UserState, event_type: str, prop: str, window_ms: int, at_ms: int) -> float:
    hist = state.history
    values = []
    for i in range(_first_after(hist, at_ms - window_ms), len(hist)):
        h = hist[i]
        if h.ts > at_ms:
            break
        if h.type == event_type:
            values.append(h.props.get(prop, 0.0))
    return sum(values)  # sum(), as before: 0 (int) when nothing matches


def _first_after(hist: list[Hist], ts: int) -> int:
    """Index of the first entry with time > ts (the history is kept in time order)."""
    return bisect_right(hist, ts, key=_ts)


_ts = attrgetter("ts")
