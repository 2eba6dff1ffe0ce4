"""Start a worker process: config -> settings -> topics -> Faust worker + web server."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import faust

from nudgeflow.pipeline.app import Runtime, create_runtime
from nudgeflow.pipeline.config import load_config
from nudgeflow.pipeline.observability import logs
from nudgeflow.pipeline.provision import ensure_topics
from nudgeflow.pipeline.settings import resolve_settings
from nudgeflow.pipeline.web.server import WebServer

log = logging.getLogger(__name__)

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "defaults" / "nudgeflow.yaml"


def prepare(config_path: Path | None, flags: Mapping[str, Any]) -> Runtime:
    """Validate everything (fails fast, naming rule and field), then build the runtime."""
    config = load_config(config_path or DEFAULT_CONFIG)
    settings = resolve_settings(config.settings, flags=flags)
    return create_runtime(config, settings)


def changelog_topics(rt: Runtime) -> list[str]:
    return [table.changelog_topic.get_topic_name() for table in rt.app.tables.values()]


def provision(rt: Runtime) -> None:
    """Create the topics (one retry topic per delay of the retry schedule) and changelogs."""
    retry_tiers = len(rt.config.delivery.retry_schedule)
    asyncio.run(ensure_topics(rt.settings, retry_tiers, changelog_topics(rt)))


def run(rt: Runtime) -> None:
    """Run until SIGINT/SIGTERM. Blocks; Faust owns the event loop."""
    provision(rt)
    worker = faust.Worker(
        rt.app,
        WebServer(rt),
        loglevel=rt.settings.log_level,
        logging_config=logs.logging_config(
            rt.settings.log_level, rt.settings.log_format, logs.secrets_of(rt.config, rt.settings)
        ),
        redirect_stdouts=False,
    )
    worker.execute_from_commandline()
