"""A `TableView` over one RocksDB as partition 0, for work outside a Faust worker.

The bench (seeding and timing the timer index) and unit tests of the table helpers
(users, timers, delivered marks) drive the same helpers the agents use, on a plain
rocksdict DB: the mapping calls they make, and `data._dbs` where `tables.timers` finds
a partition's DB.
"""

from __future__ import annotations

from typing import Any

from rocksdict import Rdict


class SinglePartitionTable:
    def __init__(self, db: Rdict) -> None:
        self.db = db
        self.data = self
        self._dbs = {0: db}

    def get(self, key: bytes, default: Any = None) -> Any:
        value = self.db.get(key)
        return default if value is None else value

    def __setitem__(self, key: bytes, value: bytes) -> None:
        self.db[key] = value

    def pop(self, key: bytes, default: Any = None) -> Any:
        value = self.db.get(key)
        if value is not None:
            del self.db[key]
        return default if value is None else value

    def stored_keys(self) -> list[bytes]:
        """Every stored key, in RocksDB order."""
        return [k for k in self.db.keys() if isinstance(k, bytes)]  # noqa: SIM118 (Rdict iterates items)
