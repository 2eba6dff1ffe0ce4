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

from nudgeflow.agents import deliver
from nudgeflow.config.loader import load_config_text
from nudgeflow.config.settings import WorkerSettings
from nudgeflow.pipeline.provision import provision
from nudgeflow.pipeline.runtime import Runtime, build_runtime
from nudgeflow.worker import Worker


def build(spec: dict) -> Runtime:  # type: ignore[type-arg]
    """The production runtime (pipeline/runtime.py), with only the deliver agents on it."""
    config = load_config_text(
        json.dumps({"destinations": spec["destinations"], "delivery": spec["delivery"]}),
        base_dir=Path(spec["data_dir"]),
        source="deliver-spec",
    )
    settings = WorkerSettings(
        broker=spec["broker"],
        topic_prefix=spec["prefix"],
        app_id=spec["app_id"],
        data_dir=Path(spec["data_dir"]),
        partitions=spec["partitions"],
        roles=["deliver"],
    )
    rt = build_runtime(config, settings)
    deliver.register(rt)
    return rt


def main() -> None:
    """Provision (as `nudgeflow worker` does), then run the production `Worker` (its SIGTERM
    path is what the shutdown tests exercise)."""
    spec = json.loads(Path(sys.argv[1]).read_text())
    rt = build(spec)
    provision(rt)
    worker = Worker(rt, loglevel=spec.get("log_level", "info"), redirect_stdouts=False)
    worker.execute_from_commandline()


if __name__ == "__main__":
    main()
