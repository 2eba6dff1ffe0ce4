"""An attempt count is durable when `count` returns: the broker has acknowledged it."""

# ruff: noqa: F811  (the DirectTable fixtures of test_direct.py, imported by name)

from __future__ import annotations

import asyncio

from nudgeflow.tables.attempts import TIMEOUT, AttemptBook, Attempts, record_key, timer_key
from tests.unit.tables.test_direct import (  # noqa: F401  (fixtures)
    _Direct,
    _settle,
    direct_table,
    partition,
    store,
)


async def test_count_returns_only_once_the_changelog_record_is_acked(
    direct_table: _Direct,
) -> None:
    book = AttemptBook(direct_table.table)
    key = record_key("events", 0, 7)
    tried = Attempts(count=1, reason=TIMEOUT, error="still running")
    task = asyncio.ensure_future(book.count(key, tried))
    await _settle()
    assert not task.done() and len(direct_table.sender.sent) == 1
    assert book.get(key) == tried  # readable at once

    direct_table.sender.ack(0, offset=3)
    await _settle()
    assert task.done() and task.exception() is None
    assert direct_table.table.unapplied == 0  # in RocksDB


async def test_clear_writes_a_tombstone_and_is_free_when_nothing_was_counted(
    direct_table: _Direct,
) -> None:
    book = AttemptBook(direct_table.table)
    book.clear(timer_key(5, b"ana"))
    await direct_table.table.flush()
    assert direct_table.sender.sent == []

    key = timer_key(5, b"ana")
    task = asyncio.ensure_future(book.count(key, Attempts(count=2, reason="processing_error")))
    await _settle()
    direct_table.sender.ack(0, offset=1)
    await task
    book.clear(key)
    await direct_table.table.flush()
    assert [(k, v) for k, v, _, _ in direct_table.sender.sent][-1] == (key, None)
    assert book.get(key) is None
