"""Live rules on a worker (DESIGN §3.3): the version it starts on, and the follower.

At start (`start_version`, before the app runs): the rules topic is read; empty, it is
seeded with the `--config` file's document (version 1); otherwise the live version is
the one the worker runs, with a warning when the file differs from it. The `settings:`
section always comes from the worker's own file (broker, ports, paths are per worker).

Then a task (`follow`) reads `<prefix>.rules` from the beginning with its own consumer
(no group: no rebalance) and, for every newer live version, validates and builds its
engine off the event loop and swaps `Runtime.live` in one assignment: the evaluate agent
reads it once per record, so a record is handled wholly under one version. A version
that fails to load here (a missing environment variable, say) leaves the worker on its
last good version: counted, logged naming the field, shown on /ready and GET /rules.
Every record it reads goes into `Runtime.rules_book` (kafka/ruleset.RuleBook), which
says when the follower has caught up with the topic and which version it has acted on
last: GET /rules and /rules/history answer from it, and PUT /rules waits on it so that
a GET right after shows the version just published.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from aiokafka import AIOKafkaConsumer, TopicPartition

from nudgeflow.config.loader import ConfigError, NudgeflowConfig
from nudgeflow.config.settings import WorkerSettings
from nudgeflow.config.versions import (
    Conflict,
    RuleVersion,
    document_of,
    live_of,
    load_document,
    new_version,
)
from nudgeflow.kafka import ruleset
from nudgeflow.observability import live_rules as rule_metrics
from nudgeflow.observability.clock import now_ms
from nudgeflow.pipeline.runtime import worker_engine

if TYPE_CHECKING:
    from nudgeflow.pipeline.runtime import Runtime

log = logging.getLogger(__name__)

START_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class Start:
    """What a worker starts on."""

    config: NudgeflowConfig
    version: int  # 0: the file (no version could be read)
    error: str | None = None  # the live version failed to load here: why


def start_version(path: Path, config: NudgeflowConfig, settings: WorkerSettings) -> Start:
    """Seed the topic with `path` when it is empty, else start on the live version."""
    loop = asyncio.new_event_loop()  # its own loop, closed after: Faust's is not made yet
    try:
        return loop.run_until_complete(
            asyncio.wait_for(_start(path, config, settings), START_TIMEOUT_S)
        )
    except Exception as exc:  # no broker yet: run the file; the follower catches up
        log.warning("rules topic not read at start (%s); running %s", exc, path.name)
        return Start(config, 0)
    finally:
        loop.close()


async def _start(path: Path, config: NudgeflowConfig, settings: WorkerSettings) -> Start:
    topic = ruleset.rules_topic(settings.topic_prefix)
    await ruleset.ensure_topic(settings.broker, topic)
    document = document_of(path)
    live = live_of(await ruleset.read_versions(settings.broker, topic))
    if live is None:
        live = await _seed(settings, topic, path, document)
    elif live.document != document:
        log.warning(
            "%s differs from the live rules version %d; running version %d"
            " (`nudgeflow rules apply %s` publishes the file)",
            path.name,
            live.version,
            live.version,
            path,
        )
    try:
        loaded = _load(live)
    except ConfigError as exc:
        error = f"version {live.version}: {exc}"
        log.error("rules version %d does not load here; running %s: %s", live.version, path, exc)
        rule_metrics.version_errors.inc()
        return Start(config, 0, error)
    return Start(loaded, live.version)


async def _seed(settings: WorkerSettings, topic: str, path: Path, document: str) -> RuleVersion:
    """Publish the file as version 1; a worker starting beside this one may win that."""

    def first(now_live: RuleVersion | None) -> RuleVersion:
        if now_live is not None:  # another worker seeded it meanwhile
            raise Conflict(1, now_live)
        author = f"worker@{socket.gethostname()}"
        comment = f"seeded from {path.name}"
        return new_version(document, live=None, author=author, time=_iso_now(), comment=comment)

    try:
        record = await ruleset.publish(settings.broker, topic, first)
    except Conflict as exc:
        assert exc.winner is not None
        return exc.winner
    log.info("rules topic %s was empty: seeded version %d from %s", topic, record.version, path)
    return record


def _load(record: RuleVersion) -> NudgeflowConfig:
    return load_document(
        record.document, paused=record.paused, source=f"rules version {record.version}"
    )


def _iso_now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class Follower:
    """Reads the rules topic for the life of the worker and swaps the engine."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.topic = rt.topics.rules
        self.book = rt.rules_book
        self.book.followed = True
        self.published_ms: dict[int, int] = {}  # version -> broker timestamp
        self.refused: int = 0  # the last version that failed to load here
        rule_metrics.live_version.set(rt.live.version)

    async def run(self) -> None:
        while True:
            try:
                await self._follow()
            except asyncio.CancelledError:
                raise
            except Exception:  # never dies: reconnect from the beginning
                log.exception("rules follower failed; reading %s again in 1s", self.topic)
                await asyncio.sleep(1.0)

    async def _follow(self) -> None:
        s = self.rt.settings
        await ruleset.ensure_topic(s.broker, self.topic)
        consumer = AIOKafkaConsumer(
            bootstrap_servers=s.broker, enable_auto_commit=False, auto_offset_reset="earliest"
        )
        await consumer.start()
        try:
            tp = TopicPartition(self.topic, 0)
            consumer.assign([tp])
            await ruleset.seek_start(consumer, tp)
            end = (await consumer.end_offsets([tp]))[tp]  # caught up once read to here
            while True:
                batch = await consumer.getmany(tp, timeout_ms=500)
                for message in batch.get(tp, []):
                    record = ruleset.decode_record(message.value, message.offset)
                    if record is not None and self.book.add(record):
                        self.published_ms[record.version] = message.timestamp
                await self._maybe_swap()
                caught_up = self.book.caught_up or await consumer.position(tp) >= end
                await self.book.settled(caught_up=caught_up)
        finally:
            await consumer.stop()

    async def _maybe_swap(self) -> None:
        live = live_of(self.book.won)
        rt = self.rt
        if live is None or live.version <= rt.live.version or live.version == self.refused:
            return
        try:
            config = await asyncio.to_thread(_load, live)
            engine = await asyncio.to_thread(worker_engine, config, rt.settings)
        except Exception as exc:  # ConfigError names the field; anything else, its type
            self.refused = live.version
            rt.rules_error = f"version {live.version}: {exc}"
            rule_metrics.version_errors.inc()
            log.error(
                "rules version %d does not load here; staying on version %d: %s",
                live.version,
                rt.live.version,
                exc,
            )
            return
        rt.swap(engine, live.version)
        rt.rules_error = None
        delay_s = max(0.0, (now_ms() - self.published_ms.get(live.version, now_ms())) / 1000)
        rt.rules_swap_delay_s = delay_s
        rule_metrics.live_version.set(live.version)
        rule_metrics.swap_delay.set(delay_s)
        log.info(
            "rules version %d live (%s; paused: %s), %.3fs after its publish",
            live.version,
            live.comment or "no comment",
            ", ".join(live.paused) or "none",
            delay_s,
        )


def register(rt: Runtime) -> Follower:
    """Start the follower with the app (a task, not an agent: no consumer group)."""
    follower = Follower(rt)

    async def follow_rules() -> None:
        await follower.run()

    rt.app.task(follow_rules)
    return follower
