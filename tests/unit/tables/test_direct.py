"""RocksDB only ever holds an acknowledged prefix of the changelog; reads see every write."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from rocksdict import Options, Rdict

from nudgeflow.tables import direct
from nudgeflow.tables.direct import DirectTable

OFFSET_KEY = b"__faust\0offset__"


class _Store:
    """The parts of Faust's RocksDB store DirectTable uses, over real RocksDB."""

    offset_key = OFFSET_KEY

    def __init__(self, tmp_path: Path) -> None:
        self._dbs = {p: Rdict(str(tmp_path / f"p{p}"), Options(raw_mode=True)) for p in (0, 1)}

    def _db_for_partition(self, partition: int) -> Rdict:
        return self._dbs[partition]


class _Sender:
    """The producer: each send returns a future the test resolves, as the broker would."""

    def __init__(self) -> None:
        self.sent: list[tuple[bytes, bytes | None, int, asyncio.Future[Any]]] = []
        self.paused: asyncio.Event | None = None  # set: send() waits for it (a full buffer)

    async def send(
        self, topic: str, key: bytes, value: bytes | None, partition: int
    ) -> asyncio.Future[Any]:
        if self.paused is not None:
            await self.paused.wait()
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.sent.append((key, value, partition, future))
        return future

    def ack(self, n: int, offset: int) -> None:
        self.sent[n][3].set_result(SimpleNamespace(offset=offset))


class _App:
    def __init__(self) -> None:
        self.crashed: list[BaseException] = []

    async def crash(self, reason: BaseException) -> None:
        self.crashed.append(reason)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[_Store]:
    store = _Store(tmp_path)
    yield store
    for db in store._dbs.values():
        db.close()


@pytest.fixture
def partition(monkeypatch: pytest.MonkeyPatch) -> SimpleNamespace:
    """The partition of the record being handled (Faust's current_event)."""
    current = SimpleNamespace(partition=0)
    event = SimpleNamespace(message=current)
    monkeypatch.setattr(direct, "current_event", lambda: event)
    return current


@dataclass
class _Direct:
    """A DirectTable over the test's store, with the sender and app it talks to."""

    table: DirectTable
    sender: _Sender
    app: _App


@pytest.fixture
def direct_table(store: _Store, partition: SimpleNamespace) -> _Direct:
    sender, app = _Sender(), _App()
    faust_table: Any = SimpleNamespace(
        name="users",
        app=app,
        data=store,
        changelog_topic=SimpleNamespace(get_topic_name=lambda: "users-changelog"),
    )
    return _Direct(DirectTable(faust_table, sender), sender, app)  # type: ignore[arg-type]


async def _two_sent(d: _Direct) -> None:
    """`ana` and `bob` written in partition 0 and sent, neither acked yet."""
    d.table[b"ana"] = b"v1"
    d.table[b"bob"] = b"v1"
    await d.table.flush()


async def _settle() -> None:
    for _ in range(3):
        await asyncio.sleep(0)


async def test_a_write_reaches_rocksdb_with_its_offset_only_when_acked(
    store: _Store, direct_table: _Direct
) -> None:
    table, sender = direct_table.table, direct_table.sender
    table[b"ana"] = b"v1"
    assert table.get(b"ana") == b"v1"  # read your own write at once
    await table.flush()
    assert sender.sent == [(b"ana", b"v1", 0, sender.sent[0][3])]
    assert store._dbs[0].get(b"ana") is None  # not acked: not on disk

    sender.ack(0, offset=41)
    await _settle()

    assert store._dbs[0].get(b"ana") == b"v1"
    assert store._dbs[0].get(OFFSET_KEY) == b"41"
    assert table.unapplied == 0


async def test_rocksdb_follows_changelog_order_whatever_order_acks_complete_in(
    store: _Store, direct_table: _Direct
) -> None:
    table, sender = direct_table.table, direct_table.sender
    table[b"ana"] = b"v1"
    table[b"index-entry"] = b"1"
    table[b"ana"] = b"v2"
    await table.flush()

    sender.ack(2, offset=12)  # a later record's future completes first
    await _settle()
    assert store._dbs[0].get(b"ana") is None  # nothing skips ahead of offset 10
    assert table.get(b"ana") == b"v2"

    sender.ack(0, offset=10)
    await _settle()
    assert store._dbs[0].get(b"ana") == b"v1"  # the prefix up to 10
    assert store._dbs[0].get(b"index-entry") is None
    assert store._dbs[0].get(OFFSET_KEY) == b"10"
    assert table.get(b"ana") == b"v2"  # the overlay still holds the newest write

    sender.ack(1, offset=11)
    await _settle()
    assert store._dbs[0].get(b"ana") == b"v2"
    assert store._dbs[0].get(b"index-entry") == b"1"
    assert store._dbs[0].get(OFFSET_KEY) == b"12"


async def test_a_delete_is_a_tombstone_seen_at_once_and_applied_on_ack(
    store: _Store, direct_table: _Direct
) -> None:
    table, sender = direct_table.table, direct_table.sender
    store._dbs[0][b"old"] = b"x"

    assert table.pop(b"old") == b"x"
    assert table.get(b"old") is None
    assert table.pop(b"old", b"default") == b"default"  # already gone: no second record
    await table.flush()
    assert [(key, value) for key, value, _, _ in sender.sent] == [(b"old", None)]
    assert store._dbs[0].get(b"old") == b"x"

    sender.ack(0, offset=3)
    await _settle()
    assert store._dbs[0].get(b"old") is None


async def test_partitions_keep_their_own_order(
    store: _Store, direct_table: _Direct, partition: SimpleNamespace
) -> None:
    table, sender = direct_table.table, direct_table.sender
    table[b"ana"] = b"a"
    partition.partition = 1
    table[b"bob"] = b"b"
    await table.flush()

    sender.ack(1, offset=7)  # partition 1 does not wait for partition 0
    await _settle()

    assert store._dbs[1].get(b"bob") == b"b"
    assert store._dbs[0].get(b"ana") is None


async def test_a_failed_record_stops_rocksdb_and_crashes_the_worker(
    store: _Store, direct_table: _Direct
) -> None:
    await _two_sent(direct_table)
    sender, app = direct_table.sender, direct_table.app
    error = RuntimeError("broker gave up")
    sender.sent[0][3].set_exception(error)
    sender.ack(1, offset=5)
    await _settle()

    assert app.crashed == [error]
    assert store._dbs[0].get(b"ana") is None
    assert store._dbs[0].get(b"bob") is None  # after the failed one: never applied
    assert store._dbs[0].get(OFFSET_KEY) is None


async def test_revocation_applies_what_is_acked_and_forgets_the_rest(
    store: _Store, direct_table: _Direct
) -> None:
    await _two_sent(direct_table)
    table, sender = direct_table.table, direct_table.sender
    table[b"cat"] = b"v1"  # queued, never sent
    sender.sent[0][3].set_result(SimpleNamespace(offset=1))  # acked, callback not run

    table.revoked({0})

    assert store._dbs[0].get(b"ana") == b"v1"
    assert table.unapplied == 0
    assert table.get(b"bob") is None  # read from RocksDB again: the next owner's
    assert table.get(b"cat") is None
    await table.flush()
    assert len(sender.sent) == 2


def _future() -> asyncio.Future[Any]:
    return asyncio.get_running_loop().create_future()


async def test_a_hold_keeps_later_writes_of_its_partition_until_the_record_is_acked(
    store: _Store, direct_table: _Direct, partition: SimpleNamespace
) -> None:
    table, sender = direct_table.table, direct_table.sender
    table[b"index-entry"] = b"1"
    trigger_ack = _future()
    table.hold_until(trigger_ack)  # a trigger record was sent for ana
    table[b"ana"] = b"fired"
    partition.partition = 1
    table[b"bob"] = b"b"
    await table.flush()

    assert [key for key, *_ in sender.sent] == [b"index-entry", b"bob"]  # ana waits
    assert table.get(b"ana") == b"fired"  # but is read at once
    assert table.unapplied == 3

    trigger_ack.set_result(SimpleNamespace(offset=0))
    await _settle()  # the release flushes in the background
    assert [key for key, *_ in sender.sent] == [b"index-entry", b"bob", b"ana"]
    sender.ack(0, offset=1)
    sender.ack(2, offset=2)
    await _settle()
    assert store._dbs[0].get(b"ana") == b"fired"


async def test_the_source_record_is_acked_only_once_its_writes_are_sent(
    direct_table: _Direct,
) -> None:
    table = direct_table.table
    acked: list[str] = []
    table.after_sent(lambda: acked.append("nothing written"))
    assert acked == ["nothing written"]  # at once

    trigger_ack = _future()
    table.hold_until(trigger_ack)
    table[b"ana"] = b"fired"
    table.after_sent(lambda: acked.append("ana's event"))
    await table.flush()
    assert acked == ["nothing written"]

    trigger_ack.set_result(SimpleNamespace(offset=0))
    await _settle()
    assert acked == ["nothing written", "ana's event"]
    assert [key for key, *_ in direct_table.sender.sent] == [b"ana"]


async def test_a_failed_held_for_record_crashes_the_worker_and_its_writes_never_go_out(
    store: _Store, direct_table: _Direct
) -> None:
    table, app = direct_table.table, direct_table.app
    trigger_ack = _future()
    table.hold_until(trigger_ack)
    table[b"ana"] = b"fired"
    acked: list[bool] = []
    table.after_sent(lambda: acked.append(True))
    await table.flush()

    error = RuntimeError("trigger record given up on")
    trigger_ack.set_exception(error)
    await _settle()
    await table.flush()

    assert app.crashed == [error]  # once, however often it is flushed
    assert direct_table.sender.sent == []
    assert acked == []  # the event is not committed: a restart replays it


async def test_revocation_drops_held_writes_and_their_acks(
    direct_table: _Direct, partition: SimpleNamespace
) -> None:
    table = direct_table.table
    table.hold_until(_future())
    table[b"ana"] = b"fired"
    acked: list[bool] = []
    table.after_sent(lambda: acked.append(True))

    table.revoked({0})
    await table.flush()

    assert table.get(b"ana") is None
    assert table.unapplied == 0
    assert direct_table.sender.sent == []
    assert acked == []  # the new owner replays the record


async def test_acks_stay_in_order_while_a_flush_is_still_sending_the_partition(
    direct_table: _Direct,
) -> None:
    """Faust must see a partition's acks in order: a record that wrote nothing is
    acknowledged after an earlier record whose writes a flush is still sending."""
    table, sender = direct_table.table, direct_table.sender
    acked: list[str] = []
    table[b"ana"] = b"v1"
    table.after_sent(lambda: acked.append("first"))
    sender.paused = asyncio.Event()
    sending = asyncio.create_task(table.flush())
    await _settle()  # the flush waits inside send()

    table.after_sent(lambda: acked.append("second, wrote nothing"))
    assert acked == []

    sender.paused.set()
    await sending
    await table.flush()
    assert acked == ["first", "second, wrote nothing"]
