"""The rules topic on a broker: read every version, publish one (DESIGN §3.3).

`<prefix>.rules` is compacted with one partition; each record is a
`config.versions.RuleVersion` keyed `<version>:<nonce>`, so compaction keeps every
version and both claims of a contested number (the lower offset wins, `settle`).
The tools (`nudgeflow rules`, PUT /rules), the worker's start, and the what-if backtest
(`load_version`) read it here, each read with a new consumer (counted:
`nudgeflow_rules_topic_reads_total`); the worker's follower (pipeline/live_rules.py)
reads it once with its own consumer and keeps what it read in a `RuleBook`, from which
GET /rules and GET /rules/history answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

from nudgeflow.config.versions import (
    MAX_DOCUMENT_BYTES,
    Conflict,
    RuleVersion,
    check_won,
    decode_version,
    diff,
    encode_version,
    history,
    live_of,
    load_document,
    new_version,
    rule_names,
    settle,
)
from nudgeflow.observability import live_rules as rule_metrics

log = logging.getLogger(__name__)

TOPIC_CONFIG = {
    "cleanup.policy": "compact",
    "max.message.bytes": str(MAX_DOCUMENT_BYTES + 200_000),
}


def rules_topic(prefix: str) -> str:
    return f"{prefix}.rules"


async def ensure_topic(bootstrap: str, topic: str) -> None:
    """Create the compacted one-partition topic if it is not there."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        problem = ""
        for _ in range(300):  # a new topic has no leader for a moment; a busy broker refuses
            described = await admin.describe_topics([topic])
            parts = described[0].get("partitions", []) if described else []
            if parts and parts[0].get("leader", -1) >= 0:
                return
            if not parts:
                problem = await _create(admin, topic)
            await asyncio.sleep(0.1)
        raise KafkaError(f"cannot create {topic}: {problem or 'no leader'}")
    finally:
        await admin.close()


async def _create(admin: AIOKafkaAdminClient, topic: str) -> str:
    """Ask for the topic; the broker's refusal as text ('' : created or there)."""
    try:
        response = await admin.create_topics(
            [NewTopic(topic, 1, 1, topic_configs=dict(TOPIC_CONFIG))]
        )
    except TopicAlreadyExistsError:
        return ""
    for _name, code, message, *_ in response.topic_errors:
        if code not in (0, TopicAlreadyExistsError.errno):
            return f"error {code}: {message}"
    return ""


async def read_records(bootstrap: str, topic: str, timeout_s: float = 30.0) -> list[RuleVersion]:
    """Every version record on `topic`, in offset order (an absent topic: none).
    A record that does not decode is skipped with a warning, never fatal."""
    rule_metrics.topic_reads.inc()
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        group_id=None,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        if topic not in await consumer.topics():
            return []
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        end = (await consumer.end_offsets([tp]))[tp]
        await seek_start(consumer, tp)
        out: list[RuleVersion] = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while await consumer.position(tp) < end:
            if loop.time() > deadline:
                raise TimeoutError(f"reading {topic} took over {timeout_s:.0f}s")
            batch = await consumer.getmany(tp, timeout_ms=500)
            for message in batch.get(tp, []):
                record = decode_record(message.value, message.offset)
                if record is not None:
                    out.append(record)
        return out
    finally:
        await consumer.stop()


async def seek_start(consumer: AIOKafkaConsumer, tp: TopicPartition) -> None:
    """To the first offset still there (explicitly: `seek_to_beginning` is lazy and a
    `position` right after it may answer the end)."""
    first = (await consumer.beginning_offsets([tp]))[tp]
    consumer.seek(tp, first)


def decode_record(value: bytes | None, offset: int) -> RuleVersion | None:
    if value is None:
        return None  # a tombstone (a losing claim cleaned up)
    try:
        return decode_version(value)
    except Exception as exc:  # a bad record on the topic is skipped, never fatal
        log.warning("rules topic: record at offset %d is not a rules version: %s", offset, exc)
        return None


class RuleBook:
    """The rules topic as this worker's follower has read it (pipeline/live_rules.py).

    Every version is kept, not the last N: the follower needs each record to settle a
    contested number, the topic itself keeps every version (compacted by unique key),
    and GET /rules/history shows them all with their diffs. The cost is the documents'
    size (each at most MAX_DOCUMENT_BYTES, typically a few KB) times the versions ever
    published; the history (diffs) is computed once per new version, not per call.
    `followed` stays False on a worker with no follower (no evaluate role): its routes
    read the topic instead."""

    def __init__(self) -> None:
        self.won: dict[int, RuleVersion] = {}  # version -> the record that holds it
        self.followed = False  # a follower fills this book
        self.caught_up = False  # it has read up to the topic's end as of its start
        self.handled = 0  # the newest version it has swapped to, or refused, here
        self._history: list[dict[str, Any]] | None = None
        self._changed = asyncio.Condition()  # bound to a loop at its first use

    def add(self, record: RuleVersion) -> bool:
        """Keep `record` unless its number is held already (the lower offset wins)."""
        if record.version in self.won:
            return False
        self.won[record.version] = record
        self._history = None
        return True

    def history(self) -> list[dict[str, Any]]:
        """`config.versions.history` of the versions read, newest first."""
        if self._history is None:
            self._history = history(self.won)
        return self._history

    async def settled(self, *, caught_up: bool) -> None:
        """The follower has acted on every version it read (and maybe reached the end)."""
        self.caught_up = self.caught_up or caught_up
        self.handled = max(self.won, default=0)
        async with self._changed:
            self._changed.notify_all()

    async def wait_caught_up(self, timeout_s: float) -> bool:
        return await self._wait(lambda: self.caught_up, timeout_s)

    async def wait_handled(self, version: int, timeout_s: float) -> bool:
        return await self._wait(lambda: self.handled >= version, timeout_s)

    async def _wait(self, ready: Callable[[], bool], timeout_s: float) -> bool:
        if ready():
            return True
        try:
            async with self._changed:
                await asyncio.wait_for(self._changed.wait_for(ready), timeout_s)
        except TimeoutError:
            return ready()
        return True


async def read_versions(bootstrap: str, topic: str) -> dict[int, RuleVersion]:
    """Version number -> the record that holds it."""
    return settle(await read_records(bootstrap, topic))


async def load_version(bootstrap: str, prefix: str, which: str | int) -> RuleVersion:
    """The version `which` ("live" or a number) of the rules on `<prefix>.rules`.
    Its `document` is the YAML (`config.versions.load_document` validates and builds
    it). LookupError when there is no such version."""
    won = await read_versions(bootstrap, rules_topic(prefix))
    if which == "live":
        record = live_of(won)
        if record is None:
            raise LookupError(f"{rules_topic(prefix)} holds no version yet")
        return record
    number = int(which)
    if number not in won:
        known = ", ".join(str(n) for n in sorted(won)) or "none"
        raise LookupError(f"no version {number} on {rules_topic(prefix)} (versions: {known})")
    return won[number]


async def publish(
    bootstrap: str,
    topic: str,
    make: Callable[[RuleVersion | None], RuleVersion],
) -> RuleVersion:
    """Publish `make(live)` and read back whether it won its number; raise
    `config.versions.Conflict` (naming the winner) if another applier's record did."""
    await ensure_topic(bootstrap, topic)
    live = live_of(await read_versions(bootstrap, topic))
    mine = make(live)
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", max_request_size=MAX_DOCUMENT_BYTES + 200_000
    )
    await producer.start()
    try:
        await producer.send_and_wait(topic, encode_version(mine), key=mine.key, partition=0)
        won = await read_versions(bootstrap, topic)
        try:
            check_won(mine, won)
        except Exception:
            with contextlib.suppress(KafkaError):  # the losing claim: a tombstone
                await producer.send_and_wait(topic, None, key=mine.key, partition=0)
            raise
    finally:
        await producer.stop()
    return mine


@dataclass(frozen=True)
class Applied:
    """A published version and the diff from the version it replaced."""

    record: RuleVersion
    diff: str
    previous: int  # the version it replaced (0: none)


async def apply(
    bootstrap: str,
    prefix: str,
    document: str,
    *,
    author: str,
    comment: str = "",
    paused: list[str] | None = None,
    expected: int | None = None,
    env: Mapping[str, str] | None = None,
    dry_run: bool = False,
    published: bool = False,
    source: str = "nudgeflow.yaml",
) -> Applied:
    """Validate `document` as the worker start does (ConfigError names rule and field;
    nothing is published), then publish it as the next version. `paused`: None keeps
    the live version's pauses (of rules still there). `expected`: the live version the
    caller based it on; another one live is a `Conflict`. `published`: the document is a
    version's already (pause, resume, rollback): not validated again here, where its
    `${ENV}` secrets may not be set; each worker loads it as any version."""
    if len(document.encode()) > MAX_DOCUMENT_BYTES:
        raise DocumentTooLarge(len(document.encode()))
    topic = rules_topic(prefix)
    live = live_of(await read_versions(bootstrap, topic))
    names = set(rule_names(document))
    keep = [n for n in (live.paused if live else []) if n in names]
    wanted = sorted(set(keep if paused is None else paused))
    if not published:
        await asyncio.to_thread(load_document, document, paused=wanted, env=env, source=source)
    before = diff(live, document, wanted)
    if dry_run:
        return Applied(new_version(document, live=live, author=author, time=iso_now()), before, 0)

    def make(now_live: RuleVersion | None) -> RuleVersion:
        if expected is not None and (now_live.version if now_live else 0) != expected:
            raise Conflict(expected + 1, now_live)
        return new_version(
            document, live=now_live, author=author, time=iso_now(), comment=comment, paused=wanted
        )

    record = await publish(bootstrap, topic, make)
    return Applied(record, before, record.expected)


class DocumentTooLarge(ValueError):
    def __init__(self, size: int) -> None:
        super().__init__(f"the document is {size} bytes; the limit is {MAX_DOCUMENT_BYTES}")


async def set_paused(
    bootstrap: str, prefix: str, rule: str, paused: bool, *, author: str
) -> Applied | None:
    """Publish the live document with `rule` paused (or resumed); None: already so.
    LookupError: no such rule, or nothing live."""
    live = await load_version(bootstrap, prefix, "live")
    if rule not in rule_names(live.document):
        raise LookupError(f"no rule {rule!r} in the live version {live.version}")
    now = set(live.paused)
    if (rule in now) == paused:
        return None
    wanted = sorted(now | {rule} if paused else now - {rule})
    verb = "pause" if paused else "resume"
    return await apply(
        bootstrap,
        prefix,
        live.document,
        author=author,
        comment=f"{verb} {rule}",
        paused=wanted,
        expected=live.version,
        published=True,
    )


async def rollback(bootstrap: str, prefix: str, version: int, *, author: str) -> Applied:
    """Publish version `version`'s document and pauses again, as the next version."""
    old = await load_version(bootstrap, prefix, version)
    return await apply(
        bootstrap,
        prefix,
        old.document,
        author=author,
        comment=f"rollback to version {version}",
        paused=list(old.paused),
        published=True,
    )


def iso_now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
