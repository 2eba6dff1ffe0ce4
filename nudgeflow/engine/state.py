"""Per-user state and its projections (profile, cart, history, dedupe).

One `UserState` is stored per user (msgpack in RocksDB) and rewritten on every
event, so it is a msgspec Struct with short wire names, array-like inner
records and bounded collections. The projection functions here are pure data
bookkeeping; rule semantics live in `core.py`.
"""

from __future__ import annotations

import hashlib
import sys
from bisect import bisect_left, bisect_right
from dataclasses import dataclass
from operator import attrgetter
from typing import Any

import msgspec
from msgspec import field

from nudgeflow.engine.actions import Decision
from nudgeflow.engine.besttime import BestTime

DEDUPE_IDS = 1_000  # recent event ids kept per user for dedupe (the `dedupe:` default) ...
DEDUPE_WITHIN_MS = 7 * 86_400_000  # ... and for at most 7 days of event time
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
    """One run of a rule: the node it is at (`step`, an index into the rule's program),
    when that node is due, and what armed it (for ids, templates and expressions).

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
    # Dedupe (see remember_key): the recent event ids' 8-byte keys, sorted (looked up by
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


@dataclass(frozen=True, slots=True)
class Dedupe:
    """The `dedupe:` setting: at most `ids` event ids per user, none older than
    `within_ms` before the user's newest event time."""

    ids: int = DEDUPE_IDS
    within_ms: int = DEDUPE_WITHIN_MS


_KEY = 8
_SECS = 4
_RING = _KEY + _SECS  # one arrival: its key, its event time (s, big-endian)
_ORDER = sys.byteorder  # keys are stored as native uint64 so that bisect can read them


def id_key(event_id: str) -> int:
    """A stable 64-bit key of an event id (two ids share one with odds ~N^2 / 2^64)."""
    return int.from_bytes(hashlib.blake2b(event_id.encode(), digest_size=_KEY).digest())


def seen(state: UserState, event_id: str | None) -> bool:
    return event_id is not None and seen_key(state, id_key(event_id), event_id)


def seen_key(state: UserState, key: int, event_id: str) -> bool:
    return place(state, key, event_id) is None


def place(state: UserState, key: int, event_id: str) -> int | None:
    """None if this id was applied, else where its key goes (for remember_key). A binary
    search of the sorted keys, in C (bisect over a uint64 view): no Python object per
    id, and decoding a state is one copy per byte string."""
    if state.seen_ids and event_id in state.seen_ids:
        return None
    keys = state.seen_keys
    if keys is None:
        return 0
    at, found = _find(keys, key)
    return None if found else at


def _find(keys: bytearray, key: int) -> tuple[int, bool]:
    """Where `key` is, or would go, in the sorted keys; and whether it is there. (The view
    is released when this returns: CPython frees it with its last reference.)"""
    view = memoryview(keys).cast("Q")
    at = bisect_left(view, key)
    return at, at < len(view) and view[at] == key


def remember_id(
    state: UserState, event_id: str | None, ts: int, dedupe: Dedupe | None = None
) -> None:
    if event_id is not None:
        remember_key(state, id_key(event_id), ts, dedupe or _DEFAULT_DEDUPE)


def remember_key(
    state: UserState, key: int, ts: int, dedupe: Dedupe, at: int | None = None
) -> None:
    """Keep the last `dedupe.ids` ids (`key` not yet seen: seen_key() was False), none
    older than `dedupe.within_ms` before the newest event time (state.last_ts); the
    oldest arrivals leave first. Python work is O(1) per call plus one step per id that
    leaves: the ring appends at its end and drops from its start (a bytearray does both
    without copying), the sorted keys move their tail (a memmove). `at`: place()'s
    answer for this key, if the caller has it (saves a search)."""
    if state.seen_ids:
        _fold_lists(state)
        at = None
    keys, ring = state.seen_keys, state.seen_ring
    if keys is None or ring is None:
        keys = state.seen_keys = bytearray()
        ring = state.seen_ring = bytearray()
    packed = key.to_bytes(_KEY, _ORDER)
    if at is None:
        at = _find(keys, key)[0]
    keys[at * _KEY : at * _KEY] = packed
    ring += packed + _secs(ts)
    floor = (state.last_ts - dedupe.within_ms) // 1000
    if len(ring) > dedupe.ids * _RING or int.from_bytes(ring[_KEY:_RING]) < floor:
        _evict(keys, ring, dedupe.ids, floor)


def _evict(keys: bytearray, ring: bytearray, ids: int, floor: int) -> None:
    """Drop the oldest arrivals beyond `ids` or older than `floor` (s)."""
    n = len(ring) // _RING
    drop = n - ids if n > ids else 0
    while drop < n and int.from_bytes(ring[drop * _RING + _KEY : (drop + 1) * _RING]) < floor:
        drop += 1
    for i in range(drop):  # usually the one the new id pushed out
        at = _find(keys, int.from_bytes(ring[i * _RING : i * _RING + _KEY], _ORDER))[0] * _KEY
        del keys[at : at + _KEY]
    del ring[: drop * _RING]


def _secs(ts: int) -> bytes:
    return min(max(ts // 1000, 0), 0xFFFFFFFF).to_bytes(_SECS, "big")


def _fold_lists(state: UserState) -> None:
    """A state from before issue 19: its id list becomes keys (same arrival order)."""
    ids, times = state.seen_ids, state.seen_ts
    state.seen_ids, state.seen_ts = [], []
    keep_all = Dedupe(ids=len(ids) + 1, within_ms=1 << 62)
    for event_id, ts in zip(ids, times, strict=False):
        key = id_key(event_id)
        if state.seen_keys is None or not _find(state.seen_keys, key)[1]:
            remember_key(state, key, ts, keep_all)


def merge_seen(out: UserState, first: UserState, second: UserState) -> None:
    """Both states' dedupe ids into `out`, `first`'s arrivals before `second`'s (an
    identity merge: an event sent under either id is one event). Bounded again by the
    `dedupe:` setting at the next remember_key; rare, so a plain loop."""
    out.seen_ids = [*first.seen_ids, *second.seen_ids]  # (states from before issue 19)
    out.seen_ts = [*first.seen_ts, *second.seen_ts]
    ring = bytearray(first.seen_ring or b"") + (second.seen_ring or b"")
    keys = sorted({int.from_bytes(ring[i : i + _KEY], _ORDER) for i in range(0, len(ring), _RING)})
    out.seen_ring = ring or None
    out.seen_keys = bytearray(b"".join(k.to_bytes(_KEY, _ORDER) for k in keys)) or None


def seen_count(state: UserState) -> int:
    return len(state.seen_ring or ()) // _RING + len(state.seen_ids)


_DEFAULT_DEDUPE = Dedupe()


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
