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
from nudgeflow.pipeline.topics import TopicNames


def build(spec: dict) -> faust.App:  # type: ignore[type-arg]
    app = faust.App(
        spec["app_id"],
        broker=f"kafka://{spec['broker']}",
        store="rocksdb://",
        datadir=spec["data_dir"],
        web_enabled=False,
        topic_partitions=spec["partitions"],
        topic_replication_factor=1,
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        producer_linger_ms=1,
        broker_commit_every=100,
        broker_commit_interval=0.5,
        stream_wait_empty=False,
        # a kill -9'd member holds its partitions until the session times out
        broker_session_timeout=10.0,
        broker_heartbeat_interval=1.0,
        autodiscover=False,
        topic_disable_leader=True,
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
