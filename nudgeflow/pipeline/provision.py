"""Create Nudgeflow's topics before the Faust app starts, and wait until they are usable.

Faust declares only its internal topics; the events, trigger, retry, wait, audit and
dead-letter topics must exist with the configured partition count, so that
user-keyed records land in the partition that owns the user's state (a topic the
broker auto-created on first use would get the broker's default count instead).

A topic that was just created has no partition leaders for a moment, and a broker
that was just started has no group coordinator until `__consumer_offsets` exists;
every client that asks meanwhile logs an error (`NotLeaderForPartitionError`,
`GroupCoordinatorNotAvailableError`) and retries. So provisioning returns only once
every partition has a leader and the group has a coordinator (or after
`READY_TIMEOUT_S`, with a warning). The broker's metadata can name a leader a moment
before that leader serves offsets, and a second worker starting beside the first sees
the same; those retried client errors are logged at debug for the first
`STARTUP_NOISE_S` (`quiet_startup_noise`): a healthy start logs no error.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

from nudgeflow.config.settings import WorkerSettings
from nudgeflow.config.topics import TopicNames
from nudgeflow.delivery.records import wait_topic

if TYPE_CHECKING:
    import faust

    from nudgeflow.pipeline.runtime import Runtime

log = logging.getLogger(__name__)

READY_TIMEOUT_S = 60.0
_POLL_S = 0.2
STARTUP_NOISE_S = 120.0
# What aiokafka logs, and retries, while new partitions and the group settle.
_TRANSIENT = (
    "NotLeaderForPartitionError",
    "GroupCoordinatorNotAvailableError",
    "NotCoordinatorForGroupError",
    "LeaderNotAvailableError",
)
_NOISY_LOGGERS = (
    "aiokafka.consumer.fetcher",
    "aiokafka.consumer.group_coordinator",
    "aiokafka.producer.sender",
    "aiokafka.cluster",
)


class _StartupNoise(logging.Filter):
    """Relabels aiokafka's retried start-up errors as debug until `until` (monotonic)."""

    def __init__(self, until: float) -> None:
        super().__init__()
        self.until = until

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno > logging.DEBUG and time.monotonic() < self.until:
            message = record.getMessage()
            if any(name in message for name in _TRANSIENT):
                record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return True


def quiet_startup_noise(window_s: float = STARTUP_NOISE_S) -> None:
    """Install the filter on the client loggers that raise the noise (a filter on a
    logger applies to records created there, so on each one, not on `aiokafka`)."""
    noise = _StartupNoise(time.monotonic() + window_s)
    for name in _NOISY_LOGGERS:
        logger = logging.getLogger(name)
        for old in [f for f in logger.filters if isinstance(f, _StartupNoise)]:
            logger.removeFilter(old)
        logger.addFilter(noise)


def topic_names(
    topics: TopicNames, retry_tiers: int, destinations: Sequence[str] = ()
) -> list[str]:
    """Every topic a worker uses, but the changelogs; one wait topic per destination."""
    return [
        topics.events,
        topics.events_dlq,
        topics.events_by_user,
        topics.ticks,
        topics.triggers,
        topics.triggers_dlq,
        topics.decisions,
        topics.deliveries,
        topics.conversions,
        topics.erasures,
        *(topics.triggers_retry(n) for n in range(retry_tiers)),
        *(wait_topic(topics.prefix, name) for name in destinations),
    ]


_COMPACT = {"cleanup.policy": "compact"}


async def ensure_topics(
    settings: WorkerSettings,
    retry_tiers: int,
    changelogs: Sequence[str] = (),
    destinations: Sequence[str] = (),
) -> None:
    """Create what is missing: our topics, and the tables' compacted changelogs; then
    wait for their leaders and the group's coordinator.

    `retry_tiers` is the length of the delivery retry schedule (one topic per delay).
    The changelogs are created here, before Faust starts, because Faust checks a
    table's changelog partitions against its source topic on the first event; if
    its metadata does not show the changelog yet, that event fails.
    """
    topics = TopicNames(settings.topic_prefix)
    names = topic_names(topics, retry_tiers, destinations)
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.broker, request_timeout_ms=15000)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        plain = [n for n in names if n not in existing]
        compacted = [n for n in changelogs if n not in existing]
        new = [NewTopic(n, settings.partitions, settings.replication_factor) for n in plain]
        new += [
            NewTopic(n, settings.partitions, settings.replication_factor, topic_configs=_COMPACT)
            for n in compacted
        ]
        if new:
            with contextlib.suppress(TopicAlreadyExistsError):  # another worker won the race
                await admin.create_topics(new)
            log.info("created topics: %s", ", ".join(t.name for t in new))
        await _until_ready(admin, [*names, *changelogs], settings.group_id)
    finally:
        await admin.close()


async def _until_ready(admin: AIOKafkaAdminClient, names: list[str], group: str) -> None:
    """Poll until every partition of `names` has a leader and `group` a coordinator."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + READY_TIMEOUT_S
    waiting: list[str] = names
    while waiting and loop.time() < deadline:
        waiting = [t["topic"] for t in await admin.describe_topics(names) if _leaderless(t)]
        if waiting:
            await asyncio.sleep(_POLL_S)
    coordinator = False
    while not coordinator and loop.time() < deadline:
        try:
            await admin.find_coordinator(group)
            coordinator = True
        except KafkaError:  # __consumer_offsets is still being created
            await asyncio.sleep(_POLL_S)
    if waiting or not coordinator:
        log.warning(
            "topics not ready after %.0f s (leaderless: %s; group coordinator: %s)",
            READY_TIMEOUT_S,
            ", ".join(waiting) or "none",
            "found" if coordinator else "missing",
        )


def _leaderless(topic: dict[str, Any]) -> bool:
    partitions = topic.get("partitions") or []
    return (
        bool(topic.get("error_code"))
        or not partitions
        or any(p.get("error_code") or p.get("leader", -1) < 0 for p in partitions)
    )


def changelog_topics(app: faust.App) -> list[str]:
    return [table.changelog_topic.get_topic_name() for table in app.tables.values()]


def provision(rt: Runtime) -> None:
    """Create the topics (one retry topic per delay of the retry schedule) and changelogs."""
    quiet_startup_noise()
    retry_tiers = len(rt.config.delivery.retry_schedule)
    destinations = list(rt.config.destinations) if "deliver" in rt.settings.roles else []
    asyncio.run(ensure_topics(rt.settings, retry_tiers, changelog_topics(rt.app), destinations))
