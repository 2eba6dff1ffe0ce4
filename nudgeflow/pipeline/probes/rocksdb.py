"""RocksDB's own memory, per table, read from the open partition DBs at scrape time.

RSS alone cannot say whether a worker leaks or its RocksDB buffers are filling
up to their bounds (tables/options.py): these are the three parts RocksDB
reports, summed over the table's open partitions.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from nudgeflow.observability.metrics import Sample

KINDS = {
    "memtables": "rocksdb.cur-size-all-mem-tables",
    "block_cache": "rocksdb.block-cache-usage",
    "table_readers": "rocksdb.estimate-table-readers-mem",
}


def memory_of(tables: Iterable[Any]) -> Iterator[Sample]:
    """(table, kind) -> bytes, for Faust tables whose store keeps rocksdict DBs in `_dbs`."""
    for table in tables:
        dbs = dict(getattr(table.data, "_dbs", {}) or {})
        for kind, prop in KINDS.items():
            total = 0
            for db in dbs.values():
                total += db.property_int_value(prop) or 0
            yield (table.name, kind), float(total)
