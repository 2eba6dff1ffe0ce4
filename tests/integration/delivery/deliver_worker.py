"""A worker running only the deliver agents, for the delivery integration tests.

    python -m tests.integration.delivery.deliver_worker SPEC.json

SPEC: {"broker", "prefix", "app_id", "data_dir", "partitions",
       "destinations": {name: Destination fields}, "delivery": DeliverySettings fields}
Run as a subprocess so a test can kill -9 it and start it again on the same data dir.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import faust

from nudgeflow.agents.deliver import install
from nudgeflow.delivery.config import DeliverySettings, Destination
from nudgeflow.pipeline.app import create_app
from nudgeflow.pipeline.settings import WorkerSettings
from nudgeflow.pipeline.topics import TopicNames


def build(spec: dict) -> faust.App:  # type: ignore[type-arg]
    """The production app configuration (pipeline/app.create_app), with only delivery on it."""
    app = create_app(
        WorkerSettings(
            broker=spec["broker"],
            topic_prefix=spec["prefix"],
            app_id=spec["app_id"],
            data_dir=Path(spec["data_dir"]),
            partitions=spec["partitions"],
        )
    )
    install(
        app,
        TopicNames(spec["prefix"]),
        {n: Destination.model_validate(d) for n, d in spec["destinations"].items()},
        DeliverySettings.model_validate(spec["delivery"]),
        spec["partitions"],
    )
    return app


def main() -> None:
    spec = json.loads(Path(sys.argv[1]).read_text())
    app = build(spec)
    worker = faust.Worker(app, loglevel="info", redirect_stdouts=False)
    worker.execute_from_commandline()


if __name__ == "__main__":
    main()
