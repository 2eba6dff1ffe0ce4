"""The normalized event every part of Nudgeflow speaks (DESIGN §2).

Producers may send ISO 8601 or epoch-ms timestamps, Segment payloads, or
unkeyed records; by the time an event reaches the rule engine it is this
struct, with `ts` in epoch milliseconds (UTC).
"""

from __future__ import annotations

from typing import Any

import msgspec

# An identity-merge request (engine/identity.py) is an event of this type, keyed by the
# anonymous id, with the known id and a stable merge id in its properties.
MERGE_EVENT = "identify_merge"
KNOWN_ID = "known_id"
MERGE_ID = "merge_id"


class Event(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    user_id: str
    type: str
    ts: int  # event time, epoch milliseconds UTC
    event_id: str | None = None
    properties: dict[str, Any] = {}
    traits: dict[str, Any] = {}


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(Event)


def encode_event(event: Event) -> bytes:
    return _encoder.encode(event)


def decode_event(data: bytes) -> Event:
    """Decode an event that Nudgeflow itself already validated (internal topics)."""
    return _decoder.decode(data)
