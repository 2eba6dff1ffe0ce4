"""Raw-bytes settings for Faust tables and topics: we (de)serialize with msgspec ourselves.

Faust derives a table's serializers from `key_type`/`value_type` (bytes -> raw)
and ignores a `schema=` argument's serializers, and a Topic decodes keys with
JSON unless given the serializers as keyword arguments, so both take these
keyword arguments rather than a faust.Schema.
"""

from __future__ import annotations

from typing import Any, cast

import faust

RAW_TABLE: dict[str, Any] = {"key_type": bytes, "value_type": bytes}

RAW_TOPIC: dict[str, Any] = {
    "key_type": bytes,
    "value_type": bytes,
    "key_serializer": "raw",
    "value_serializer": "raw",
}


def raw_table(
    app: faust.App, name: str, partitions: int, options: dict[str, Any], help: str
) -> faust.Table:
    """A changelog-backed RocksDB table of raw bytes, partitioned like the events."""
    table = app.Table(
        name, default=None, **RAW_TABLE, partitions=partitions, options=options, help=help
    )
    return cast(faust.Table, table)
