"""The Faust app factory and the Runtime every agent registers against.

There is no module-level app: tests and `nudgeflow dev` build as many as they
need, each from a validated config and settings.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

import faust

from nudgeflow.agents.timers import TickBook
from nudgeflow.engine.core import Engine, build_engine
from nudgeflow.pipeline import consumer, garbage, malloc
from nudgeflow.pipeline.analytics import Analytics
from nudgeflow.pipeline.config import NudgeflowConfig
from nudgeflow.pipeline.settings import WorkerSettings
from nudgeflow.pipeline.topics import TopicNames
from nudgeflow.tables import timeline as timeline_table
from nudgeflow.tables import users as users_table
from nudgeflow.tables.direct import DirectTable
from nudgeflow.tables.timer_floors import TimerFloors

log = logging.getLogger(__name__)

_DEV_SECRET = b"nudgeflow-dev-secret-change-me"


@dataclass
class Runtime:
    """Everything an agent or a web view needs, built once per worker."""

    app: faust.App
    settings: WorkerSettings
    config: NudgeflowConfig
    topics: TopicNames
    engine: Engine
    users: faust.Table
    # The agents' write path to `users` and `timeline` (tables/direct.py): every writer
    # shares one per table so each changelog partition gets the writes in order.
    users_direct: DirectTable
    tick_book: TickBook = field(default_factory=TickBook)
    timeline: faust.Table | None = None  # per-user audit: tables/timeline.py
    timeline_direct: DirectTable | None = None
    timer_floors: TimerFloors = field(default_factory=TimerFloors)  # tables/timer_floors.py
    analytics: Analytics | None = None  # global aggregates: pipeline/analytics.py

    @property
    def partitions(self) -> int:
        return self.settings.partitions


def engine_secret() -> bytes:
    """Key for discount codes and other HMACs; from the environment only."""
    secret = os.environ.get("NUDGEFLOW_SECRET")
    if not secret:
        log.warning("NUDGEFLOW_SECRET is not set; using the development secret")
        return _DEV_SECRET
    return secret.encode()


# Several records per event (state, audit, triggers): let them share requests.
PRODUCER_LINGER_MS = 5


def create_app(settings: WorkerSettings) -> faust.App:
    return consumer.App(
        settings.group_id,
        broker=[f"kafka://{b.strip()}" for b in settings.broker.split(",")],
        store="rocksdb://",
        datadir=str(settings.data_dir),
        web_enabled=False,
        canonical_url=settings.advertised_url or f"http://{settings.web_host}:{settings.web_port}",
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication_factor,
        table_standby_replicas=settings.standby_replicas,
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        producer_linger_ms=PRODUCER_LINGER_MS,
        broker_commit_every=1000,
        broker_commit_interval=1.0,
        stream_wait_empty=False,
        # A crashed worker's partitions move after 10 s, not Faust's default 60 s.
        broker_session_timeout=10.0,
        broker_heartbeat_interval=1.0,
        autodiscover=False,
        topic_disable_leader=True,
    )


# Faust queues table changelog writes in a 100-message buffer and stalls the stream
# ("producer buffer full") each time it fills; a few writes per event fill it fast.
PRODUCER_BUFFER_MESSAGES = 2000


def create_runtime(config: NudgeflowConfig, settings: WorkerSettings) -> Runtime:
    """Build the app, its tables, and register every agent."""
    from nudgeflow.agents import deliver, evaluate, timers

    app = create_app(settings)
    app.producer.buffer.max_messages = PRODUCER_BUFFER_MESSAGES
    users = users_table.define(app, settings.partitions)
    timeline = timeline_table.define(app, settings.partitions)
    rt = Runtime(
        app=app,
        settings=settings,
        config=config,
        topics=TopicNames(settings.topic_prefix),
        engine=build_engine(config, secret=engine_secret()),
        users=users,
        users_direct=DirectTable(users),
        timeline=timeline,
        timeline_direct=DirectTable(timeline),
    )
    rt.timer_floors.attach(app)
    rt.users_direct.attach(app)
    if rt.timeline_direct is not None:
        rt.timeline_direct.attach(app)
    malloc.install(app)
    garbage.install(app)
    rt.analytics = Analytics(rt)
    if "evaluate" in settings.roles:
        evaluate.register(rt)
        timers.register(rt)
    if "deliver" in settings.roles:
        deliver.register(rt)
    return rt
