"""A worker process, assembled: runtime, agents by role, analytics, web server; and run.

The floors below know nothing of each other's assembly (docs/architecture.md, "Floors"):
`pipeline/runtime.py` builds the app and its tables, each agent module registers itself
on it, and this module is the one place that decides which of them a worker runs.
`nudgeflow worker`, `nudgeflow dev` and the tests all start workers through it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faust
from mode import Service
from mode.utils.logging import level_number

from nudgeflow.agents import deliver, evaluate, timers
from nudgeflow.analytics.service import Analytics
from nudgeflow.config.loader import DEFAULT_CONFIG, NudgeflowConfig, load_config
from nudgeflow.config.settings import WorkerSettings, resolve_settings
from nudgeflow.observability import logs
from nudgeflow.observability.heap import HeapTrace
from nudgeflow.pipeline import live_rules
from nudgeflow.pipeline.provision import provision
from nudgeflow.pipeline.runtime import Runtime, build_runtime
from nudgeflow.web.server import WebServer

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WorkerParts:
    """What one worker process runs: the runtime with its agents, analytics, the web."""

    rt: Runtime
    analytics: Analytics
    web: WebServer


def assemble(
    config: NudgeflowConfig, settings: WorkerSettings, start: live_rules.Start | None = None
) -> WorkerParts:
    """Build the runtime and register the agents of the worker's roles on it; with
    `start`, on the live rules version it names, following the rules topic after."""
    version = 0
    if start is not None:
        config, version = start.config, start.version
    rt = build_runtime(config, settings, version)
    if start is not None:
        rt.rules_error = start.error
    if "evaluate" in settings.roles:
        evaluate.register(rt)
        timers.register(rt)
        if start is not None:
            live_rules.register(rt)
    if "deliver" in settings.roles:
        deliver.register(rt)
    analytics = Analytics(rt)
    return WorkerParts(rt, analytics, WebServer(rt, analytics))


def prepare(config_path: Path | None, flags: Mapping[str, Any]) -> WorkerParts:
    """Validate everything (fails fast, naming rule and field), seed the rules topic or
    read its live version (pipeline/live_rules.py), then assemble."""
    path = config_path or DEFAULT_CONFIG
    config = load_config(path)
    settings = resolve_settings(config.settings, flags=flags)
    return assemble(config, settings, live_rules.start_version(path, config, settings))


class Worker(faust.Worker):
    """Faust's worker, plus the runtime's `before_stop` hooks on SIGTERM/SIGINT.

    Faust stops the app first among the worker's services, and the app stops its
    consumer (pausing, then leaving the group) before anything else of ours hears of
    it; a worker's own `on_stop` runs before any of that, while this worker still owns
    its partitions. That is where in-flight deliveries are finished or handed back.
    """

    def __init__(self, rt: Runtime, *services: Service, **kwargs: Any) -> None:
        self.runtime = rt
        self.heap = HeapTrace.from_env()  # observability/heap.py: SIGUSR2 reports growth
        super().__init__(rt.app, *services, **kwargs)

    async def on_first_start(self) -> None:
        await super().on_first_start()  # logging is set up here
        self.heap.start()

    def _on_sigusr2(self) -> None:
        """The heap's growth, logged; never mode's pdb prompt, which would stop the loop."""
        log.warning("%s", self.heap.report())

    async def on_stop(self) -> None:
        for hook in self.runtime.before_stop:
            try:
                await hook()
            except Exception:  # stopping goes on; what was not finished is re-read
                log.exception("a before-stop hook failed")
        await super().on_stop()


def run(
    parts: WorkerParts,
    *,
    extra: Sequence[Service] = (),
    loglevel: str | None = None,
    levels: Mapping[str, str] | None = None,
) -> None:
    """Create the topics, then run until SIGINT/SIGTERM. Blocks; Faust owns the event loop.

    `levels` sets single loggers apart from `loglevel` (`nudgeflow dev` keeps the
    libraries at warning while its own lines show at info)."""
    rt = parts.rt
    provision(rt)
    level = loglevel or rt.settings.log_level
    config = logs.logging_config(
        level, rt.settings.log_format, logs.secrets_of(rt.config, rt.settings)
    )
    for name, named_level in (levels or {}).items():
        config["loggers"][name] = {"level": level_number(named_level)}
    worker = Worker(
        rt, parts.web, *extra, loglevel=level, logging_config=config, redirect_stdouts=False
    )
    worker.execute_from_commandline()
