"""Create Nudgeflow's topics before the Faust app starts.

Faust only declares the topics it consumes; the events, trigger, audit and
dead-letter topics must exist with the configured partition count, so that
user-keyed records land in the partition that owns the user's state.
"""

from __future__ import annotations

import contextlib
import logging

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from nudgeflow.pipeline.settings import WorkerSettings
from nudgeflow.pipeline.topics import TopicNames

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


async def ensure_topics(settings: WorkerSettings, retry_tiers: int) -> None:
    """`retry_tiers` is the length of the delivery retry schedule (one topic per delay)."""
    topics = TopicNames(settings.topic_prefix)
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.broker, request_timeout_ms=15000)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        wanted = [n for n in topic_names(topics, retry_tiers) if n not in existing]
        if not wanted:
            return
        new = [NewTopic(n, settings.partitions, settings.replication_factor) for n in wanted]
        with contextlib.suppress(TopicAlreadyExistsError):  # another worker won the race
            await admin.create_topics(new)
        log.info("created topics: %s", ", ".join(wanted))
    finally:
        await admin.close()
