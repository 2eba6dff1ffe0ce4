"""The Runtime: what every agent, probe and view of one worker shares, built once.

A leaf: it knows the app, the settings, the engine and the tables, and nothing above
it (no agent, no analytics, no web server), so anything may take it as an argument
without an import cycle. Every field is always set. Which agents run, and the web
server, are assembled on top of it by `nudgeflow/worker.py`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import faust

from nudgeflow.config.build import build_engine, engine_secret, link_signer
from nudgeflow.config.loader import NudgeflowConfig
from nudgeflow.config.settings import WorkerSettings
from nudgeflow.config.topics import TopicNames
from nudgeflow.engine.core import Engine
from nudgeflow.kafka.ruleset import RuleBook
from nudgeflow.pipeline import garbage, malloc
from nudgeflow.pipeline.app import create_app
from nudgeflow.pipeline.producer import KafkaRecordSender
from nudgeflow.pipeline.ticks import TickBook
from nudgeflow.tables import attempts as attempts_table
from nudgeflow.tables import delivered as delivered_table
from nudgeflow.tables import timeline as timeline_table
from nudgeflow.tables import users as users_table
from nudgeflow.tables.direct import DirectTable
from nudgeflow.tables.timer_floors import TimerFloors


@dataclass(frozen=True)
class Live:
    """The engine and the rules version it was built from, swapped as one reference
    (pipeline/live_rules.py) between two records of the evaluate agent."""

    engine: Engine
    version: int = 0  # 0: not from the rules topic


@dataclass
class Runtime:
    """Everything an agent or a web view needs, built once per worker."""

    app: faust.App
    settings: WorkerSettings
    config: NudgeflowConfig
    topics: TopicNames
    live: Live  # the engine and its rules version; read `engine` / `live` once per call
    sender: KafkaRecordSender  # the one way an agent sends a record (pipeline/producer.py)
    users: faust.Table  # user id -> UserState, with the timer index (tables/users.py)
    timeline: faust.Table  # user id -> audit timeline (tables/timeline.py)
    delivered: faust.Table  # trigger|destination -> delivered mark (tables/delivered.py)
    # The agents' write path to each table (tables/direct.py): every writer shares one
    # per table so each changelog partition gets the writes in order.
    users_direct: DirectTable
    timeline_direct: DirectTable
    delivered_direct: DirectTable
    attempts_direct: DirectTable  # record -> failed handling attempts (tables/attempts.py)
    tick_book: TickBook = field(default_factory=TickBook)
    timer_floors: TimerFloors = field(default_factory=TimerFloors)
    # Awaited on SIGTERM before the app stops (worker.Worker): the deliver agent finishes
    # or hands back its in-flight webhooks there, while its partitions are still its own.
    before_stop: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    rules_error: str | None = None  # the last rules version that failed to load here, why
    rules_swap_delay_s: float | None = None  # the last swap: publish -> live here
    # Every rules version the follower read (pipeline/live_rules.py): GET /rules and
    # GET /rules/history answer from it instead of reading the topic per call.
    rules_book: RuleBook = field(default_factory=RuleBook)

    @property
    def engine(self) -> Engine:
        return self.live.engine

    def swap(self, engine: Engine, version: int) -> None:
        """Make `engine` (rules version `version`) the live one; one assignment, so a
        record is handled wholly by the old engine or wholly by the new."""
        engine.bandits.update(self.live.engine.bandits)
        self.live = Live(engine, version)

    @property
    def partitions(self) -> int:
        return self.settings.partitions

    def owned_partitions(self, topic: str) -> list[int]:
        return owned_partitions(self.app, topic)


def worker_engine(
    config: NudgeflowConfig, settings: WorkerSettings, *, warn: bool = False
) -> Engine:
    """The engine a worker runs for `config` (at start, and at each rules version)."""
    return build_engine(
        config,
        secret=engine_secret(warn=warn),
        budget=settings.render_budget(),
        links=link_signer(settings),
    )


def owned_partitions(app: faust.App, topic: str) -> list[int]:
    """The partitions of `topic` this worker actively owns now, sorted."""
    return sorted(tp.partition for tp in app.assignor.assigned_actives() if tp.topic == topic)


def build_runtime(
    config: NudgeflowConfig, settings: WorkerSettings, rule_version: int = 0
) -> Runtime:
    """The app, its tables and write paths, and the process tuning; no agents yet."""
    app = create_app(settings)
    sender = KafkaRecordSender(app)
    users = users_table.define(app, settings.partitions)
    timeline = timeline_table.define(app, settings.partitions)
    delivered = delivered_table.define(app, settings.partitions)
    rt = Runtime(
        app=app,
        settings=settings,
        config=config,
        topics=TopicNames(settings.topic_prefix),
        live=Live(worker_engine(config, settings, warn=True), rule_version),
        sender=sender,
        users=users,
        timeline=timeline,
        delivered=delivered,
        users_direct=DirectTable(users, sender),
        timeline_direct=DirectTable(timeline, sender),
        delivered_direct=DirectTable(delivered, sender),
        attempts_direct=DirectTable(attempts_table.define(app, settings.partitions), sender),
    )
    rt.timer_floors.attach(app)
    for direct in (rt.users_direct, rt.timeline_direct, rt.delivered_direct, rt.attempts_direct):
        direct.attach(app)
    malloc.install(app)
    garbage.install(app)
    return rt
