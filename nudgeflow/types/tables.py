"""What the table helpers (users, timers, timeline) need from a table.

A Faust table, a `tables.direct.DirectTable`, or a stand-in over one RocksDB (bench,
tests) all fit.
"""

from __future__ import annotations

from typing import Any, Protocol


class TableView(Protocol):
    @property
    def data(self) -> Any: ...

    def get(self, key: Any, /) -> Any: ...

    def __setitem__(self, key: Any, value: Any, /) -> None: ...

    def pop(self, key: Any, default: Any, /) -> Any: ...
