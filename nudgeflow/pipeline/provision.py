"""Create Nudgeflow's topics before the Faust app starts.

Faust only declares the topics it consumes; the events, trigger, audit and
dead-letter topics must exist with the configured partition count, so that
user-keyed records land in the partition that owns the user's state.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from nudgeflow.config.settings import WorkerSettings
from nudgeflow.config.topics import TopicNames

if TYPE_CHECKING:
    import faust

    from nudgeflow.pipeline.runtime import Runtime

log = logging.getLogger(__name__)


def topic_names(topics: TopicNames, retry_tiers: int) -> list[str]:
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
        *(topics.triggers_retry(n) for n in range(retry_tiers)),
    ]


_COMPACT = {"cleanup.policy": "compact"}


async def ensure_topics(
    settings: WorkerSettings, retry_tiers: int, changelogs: Sequence[str] = ()
) -> None:
    """Create what is missing: our topics, and the tables' compacted changelogs.

    `retry_tiers` is the length of the delivery retry schedule (one topic per delay).
    The changelogs are created here, before Faust starts, because Faust checks a
    table's changelog partitions against its source topic on the first event; if
    its metadata does not show the changelog yet, that event fails.
    """
    topics = TopicNames(settings.topic_prefix)
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.broker, request_timeout_ms=15000)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        plain = [n for n in topic_names(topics, retry_tiers) if n not in existing]
        compacted = [n for n in changelogs if n not in existing]
        new = [NewTopic(n, settings.partitions, settings.replication_factor) for n in plain]
        new += [
            NewTopic(n, settings.partitions, settings.replication_factor, topic_configs=_COMPACT)
            for n in compacted
        ]
        if not new:
            return
        with contextlib.suppress(TopicAlreadyExistsError):  # another worker won the race
            await admin.create_topics(new)
        log.info("created topics: %s", ", ".join(t.name for t in new))
    finally:
        await admin.close()


def changelog_topics(app: faust.App) -> list[str]:
    return [table.changelog_topic.get_topic_name() for table in app.tables.values()]


def provision(rt: Runtime) -> None:
    """Create the topics (one retry topic per delay of the retry schedule) and changelogs."""
    retry_tiers = len(rt.config.delivery.retry_schedule)
    asyncio.run(ensure_topics(rt.settings, retry_tiers, changelog_topics(rt.app)))
