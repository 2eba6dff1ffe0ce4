"""The Segment HTTP Tracking API mapped onto our events (DESIGN §2), so an app
instrumented with a Segment SDK can point at Nudgeflow by changing the host.

Mapping decisions:
- `userId` (or, when absent, `anonymousId`) becomes `user_id`; numeric ids are
  stringified, as Segment's own libraries do.
- `track`: `event` becomes `type` via the e-commerce / B2B / email spec names in
  `SPEC_EVENT_TYPES` ("Product Added" -> `cart_add`, "Order Completed" -> `purchase`),
  matched case- and punctuation-insensitively; any other name becomes its
  snake_case ("Video Played" -> `video_played`). `identify` -> `identify` with its
  traits; `page` -> `page_view`; `screen` -> `screen_view`. `group` has no meaning
  for triggers: a batch reports it as ignored, never as accepted.
- Identity (DESIGN §3.2, engine/identity.py): a call with both `anonymousId` and a
  different `userId`, or an `alias` (`previousId` -> `userId`), also becomes an
  `identify_merge` request keyed by the anonymous id (`properties.known_id`, and a
  `merge_id` derived from `messageId`, so a retried call is one merge). An `alias` has
  no event of its own; an alias to itself is ignored (`self_alias`), never an error.
- `timestamp` (else `originalTimestamp`, else the time received) becomes `ts`;
  `messageId` becomes `event_id`, so Segment retries are deduplicated.
- `properties` pass through unchanged, and our canonical names are added when
  absent: `product_name` from `name` and `product_id` from `sku` on product
  events; `cart_value` from `value` (else `revenue`, else `total`) on
  "Checkout Started" only, since that is the cart's worth. We never invent
  `cart_value` on a purchase: the producer's value would override the cart the
  engine computed.
- Traits: `context.traits` overlaid by the message's `traits`; `context.timezone`
  becomes `traits.timezone` when missing (quiet hours need it); `firstName` /
  `lastName` are copied to `first_name` / `last_name` when those are missing.
- The rest of `context`, and `integrations`, are dropped.
Error fields name Segment's own fields (`userId`, `event`, `timestamp`, ...).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from nudgeflow.events.model import KNOWN_ID, MERGE_EVENT, MERGE_ID, Event
from nudgeflow.events.parse import DEFAULT_LIMITS, BatchError, EventError, EventLimits, parse_event

SPEC_EVENT_TYPES: Mapping[str, str] = {
    # e-commerce spec v2
    "product_viewed": "product_view",
    "product_added": "cart_add",
    "product_removed": "cart_remove",
    "cart_viewed": "cart_view",
    "checkout_started": "checkout_started",
    "order_completed": "purchase",
    "product_list_viewed": "product_list_view",
    "products_searched": "search",
    "product_added_to_wishlist": "wishlist_add",
    "wishlist_product_removed": "wishlist_remove",
    # B2B SaaS spec
    "signed_up": "signup",
    "signed_in": "login",
    "signed_out": "logout",
    # email spec
    "unsubscribed": "unsubscribe",
}
CALL_TYPES: Mapping[str, str] = {
    "identify": "identify",
    "page": "page_view",
    "screen": "screen_view",
}
IGNORED_CALLS = frozenset({"group"})
_PRODUCT_TYPES = frozenset({"product_view", "cart_add", "cart_remove", "wishlist_add"})
_SEGMENT_FIELD = {
    "user_id": "userId",
    "type": "event",
    "ts": "timestamp",
    "event_id": "messageId",
}
_CAMEL_BOUNDARY = re.compile(r"(?<=[a-z])(?=[A-Z])|(?<=[A-Z0-9])(?=[A-Z][a-z])")
_NOT_WORD = re.compile(r"[^a-z0-9]+")


@dataclass(frozen=True)
class SegmentBatch:
    """Events accepted from a `/v1/batch` body, and calls deliberately skipped."""

    events: list[Event]
    ignored: list[dict[str, Any]] = field(default_factory=list)


def snake_case(name: str) -> str:
    """'Product Viewed' / 'productViewed' / 'product-viewed' -> 'product_viewed'."""
    spaced = _CAMEL_BOUNDARY.sub("_", name.strip())
    return _NOT_WORD.sub("_", spaced.lower()).strip("_")[:64].rstrip("_")


def event_type_for(name: str) -> str:
    """Our event type for a Segment `track` event name."""
    snake = snake_case(name)
    return SPEC_EVENT_TYPES.get(snake, snake)


def parse_segment_message(
    message: Any,
    *,
    call: str | None,
    now_ms: int,
    limits: EventLimits = DEFAULT_LIMITS,
    batch_context: Mapping[str, Any] | None = None,
) -> Event:
    """One Segment call (`call` from the route, else the message's `type`)."""
    raw = segment_to_raw(message, call=call, received_ms=now_ms, batch_context=batch_context)
    try:
        return parse_event(raw, now_ms=now_ms, limits=limits)
    except EventError as exc:
        if exc.field == "type" and exc.reason in ("invalid_type_name", "empty_field"):
            name = message.get("event")
            raise EventError(
                "invalid_type_name",
                f"event name {name!r} does not map to a snake_case type "
                "(it must start with a letter and be at most 64 characters)",
                "event",
            ) from None
        raise _renamed(exc) from None


def parse_segment_batch(
    body: Any,
    *,
    now_ms: int,
    limits: EventLimits = DEFAULT_LIMITS,
    max_batch: int = 1000,
) -> SegmentBatch:
    """A `/v1/batch` body; all-or-nothing like `parse_batch`."""
    if not isinstance(body, Mapping):
        raise BatchError([(None, EventError("not_an_object", "body must be a JSON object"))])
    messages = body.get("batch")
    if not isinstance(messages, list):
        raise BatchError(
            [(None, EventError("missing_field", "batch must be an array of calls", "batch"))]
        )
    if len(messages) > max_batch:
        err = EventError(
            "too_many_events", f"a batch holds at most {max_batch} calls, got {len(messages)}"
        )
        raise BatchError([(None, err)], total=len(messages))
    context = body.get("context")
    batch_context = context if isinstance(context, Mapping) else None
    events: list[Event] = []
    ignored: list[dict[str, Any]] = []
    errors: list[tuple[int | None, EventError]] = []
    for index, message in enumerate(messages):
        call = message.get("type") if isinstance(message, Mapping) else None
        if isinstance(call, str) and call in IGNORED_CALLS:  # `type` may be any JSON
            ignored.append({"index": index, "type": call, "reason": "unsupported_call"})
            continue
        try:
            made = parse_segment_call(
                message, call=None, now_ms=now_ms, limits=limits, batch_context=batch_context
            )
        except EventError as exc:
            errors.append((index, exc))
            continue
        events.extend(made)
        if not made:
            ignored.append({"index": index, "type": "alias", "reason": "self_alias"})
    if errors:
        raise BatchError(errors, total=len(messages))
    return SegmentBatch(events, ignored)


def parse_segment_call(
    message: Any,
    *,
    call: str | None,
    now_ms: int,
    limits: EventLimits = DEFAULT_LIMITS,
    batch_context: Mapping[str, Any] | None = None,
) -> list[Event]:
    """The events one call becomes: its own (none for an `alias`), then the merge request
    when it links an anonymous id to a user id; [] for an alias to itself."""
    kind = call or (message.get("type") if isinstance(message, Mapping) else None)
    if kind == "alias":
        return _alias(message, now_ms=now_ms, limits=limits)
    event = parse_segment_message(
        message, call=call, now_ms=now_ms, limits=limits, batch_context=batch_context
    )
    anonymous = message.get("anonymousId")
    if anonymous is None or anonymous == "" or message.get("userId") in (None, ""):
        return [event]
    anonymous_id = _id(anonymous, "anonymousId", now_ms, limits)
    if anonymous_id == event.user_id:
        return [event]
    return [event, _merge_request(anonymous_id, event.user_id, event.ts, event.event_id, limits)]


def _alias(message: Any, *, now_ms: int, limits: EventLimits) -> list[Event]:
    """`previousId` -> `userId`: only the merge request (an alias is not an event)."""
    if not isinstance(message, Mapping):
        raise EventError("not_an_object", "a Segment call is a JSON object")
    for name in ("previousId", "userId"):
        if message.get(name) is None or message.get(name) == "":
            raise EventError("missing_field", f"{name} is required for alias", name)
    previous = _id(message["previousId"], "previousId", now_ms, limits)
    known = _id(message["userId"], "userId", now_ms, limits)
    if previous == known:
        return []
    ts = _first(message, "timestamp", "originalTimestamp", default=now_ms)
    try:
        checked = parse_event(
            {"user_id": known, "type": "alias", "ts": ts}, now_ms=now_ms, limits=limits
        )
    except EventError as exc:
        raise _renamed(exc) from None
    return [_merge_request(previous, known, checked.ts, message.get("messageId"), limits)]


def _id(value: Any, name: str, now_ms: int, limits: EventLimits) -> str:
    """A user id as `userId` is read (numbers stringified), checked like one."""
    try:
        raw_id = _user_id({"userId": value})
        return parse_event(
            {"user_id": raw_id, "type": "alias", "ts": now_ms}, now_ms=now_ms, limits=limits
        ).user_id
    except EventError as exc:
        raise EventError(exc.reason, exc.message.replace("user_id", name), name) from None


def merge_id_for(anonymous: str, known: str, basis: str) -> str:
    """Deterministic: the same call (its message id) gives the same id on every retry."""
    raw = "\x1f".join((anonymous, known, basis)).encode()
    return "mrg_" + hashlib.blake2b(raw, digest_size=12).hexdigest()


def _merge_request(
    anonymous: str, known: str, ts: int, message_id: Any, limits: EventLimits
) -> Event:
    basis = str(message_id) if message_id not in (None, "") else f"ts:{ts}"
    return Event(
        user_id=anonymous,
        type=MERGE_EVENT,
        ts=ts,
        event_id=f"{basis}:merge" if message_id not in (None, "") else None,
        properties={KNOWN_ID: known, MERGE_ID: merge_id_for(anonymous, known, basis)},
    )


def segment_to_raw(
    message: Any,
    *,
    call: str | None,
    received_ms: int,
    batch_context: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Map a Segment call to our raw event dict (validated later by `parse_event`)."""
    if not isinstance(message, Mapping):
        raise EventError("not_an_object", "a Segment call is a JSON object")
    call = call or message.get("type")
    if call is None:
        raise EventError("missing_field", "type is required in a batch", "type")
    if not isinstance(call, str):
        raise EventError("wrong_type", "type must be a string", "type")
    context = _mapping(message.get("context"), "context")
    if batch_context:
        context = {**batch_context, **context}
    raw: dict[str, Any] = {
        "user_id": _user_id(message),
        "ts": _first(message, "timestamp", "originalTimestamp", default=received_ms),
        "event_id": message.get("messageId"),
    }
    if call == "track":
        name = message.get("event")
        if name is None:
            raise EventError("missing_field", "event is required for track", "event")
        if not isinstance(name, str):
            raise EventError("wrong_type", "event must be a string", "event")
        if not name.strip():
            raise EventError("empty_field", "event must not be empty", "event")
        raw["type"] = event_type_for(name)
    elif call in CALL_TYPES:
        raw["type"] = CALL_TYPES[call]
    else:
        raise EventError(
            "unsupported_call",
            f"Segment call {call!r} is not supported (track, identify, page, screen)",
            "type",
        )
    raw["properties"] = _properties(message, call, raw["type"])
    raw["traits"] = _traits(message, context, call)
    return raw


def _user_id(message: Mapping[str, Any]) -> Any:
    for key in ("userId", "anonymousId"):
        value = message.get(key)
        if value is None or value == "":
            continue
        if isinstance(value, int | float) and not isinstance(value, bool):
            return str(int(value)) if float(value).is_integer() else str(value)
        return value
    raise EventError("missing_field", "userId or anonymousId is required", "userId")


def _properties(message: Mapping[str, Any], call: str, type_: str) -> dict[str, Any]:
    props = dict(_mapping(message.get("properties"), "properties"))
    if call in ("page", "screen"):
        for key in ("name", "category"):
            if isinstance(message.get(key), str):
                props.setdefault(key, message[key])
    if type_ in _PRODUCT_TYPES:
        if "product_name" not in props and isinstance(props.get("name"), str):
            props["product_name"] = props["name"]
        if "product_id" not in props and props.get("sku") is not None:
            props["product_id"] = props["sku"]
    if type_ == "checkout_started" and "cart_value" not in props:
        for key in ("value", "revenue", "total"):
            value = props.get(key)
            if isinstance(value, int | float) and not isinstance(value, bool):
                props["cart_value"] = value
                break
    return props


def _traits(message: Mapping[str, Any], context: Mapping[str, Any], call: str) -> dict[str, Any]:
    traits = dict(_mapping(context.get("traits"), "context.traits"))
    if call == "identify":
        traits.update(_mapping(message.get("traits"), "traits"))
    timezone = context.get("timezone")
    if isinstance(timezone, str) and timezone:
        traits.setdefault("timezone", timezone)
    for camel, snake in (("firstName", "first_name"), ("lastName", "last_name")):
        if camel in traits:
            traits.setdefault(snake, traits[camel])
    return traits


def _mapping(value: Any, name: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise EventError("wrong_type", f"{name} must be an object", name)
    return value


def _first(message: Mapping[str, Any], *keys: str, default: Any) -> Any:
    for key in keys:
        value = message.get(key)
        if value is not None and value != "":
            return value
    return default


def _renamed(exc: EventError) -> EventError:
    if exc.field is None:
        return exc
    head, dot, rest = exc.field.partition(".")
    segment_field = _SEGMENT_FIELD.get(head, head) + dot + rest
    message = exc.message.replace(head, _SEGMENT_FIELD.get(head, head), 1)
    return EventError(exc.reason, message, segment_field)
