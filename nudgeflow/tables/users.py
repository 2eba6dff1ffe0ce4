"""The user state table: user id -> msgpack-encoded `engine.state.UserState`.

Partitioned like the events (key = user id), changelog-backed, stored in
RocksDB. Reads and writes happen only inside the evaluate agent's stream
iteration, where Faust knows the partition (DESIGN §7).
"""

from __future__ import annotations

import faust

from nudgeflow.engine.state import UserState, decode_state, encode_state
from nudgeflow.tables import options
from nudgeflow.tables.schema import raw_table
from nudgeflow.types.tables import TableView


def define(app: faust.App, partitions: int) -> faust.Table:
    return raw_table(
        app,
        "users",
        partitions,
        options.users(),
        "Per-user state (profile, cart, history, armed rules) and the timer index",
    )


def load(table: TableView, user_key: bytes) -> UserState | None:
    raw = table.get(user_key)
    return decode_state(raw) if raw else None


def save(table: TableView, user_key: bytes, state: UserState) -> None:
    table[user_key] = encode_state(state)


def put(table: TableView, user_key: bytes, encoded: bytes) -> None:
    """Store a state already encoded (agents/plan.py encodes before anything is sent)."""
    table[user_key] = encoded
