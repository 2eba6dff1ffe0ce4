"""A Faust worker whose fetch position jumps forward once (test_consumer.py).

    python -m tests.integration.pipeline.jump_worker SPEC.json

SPEC: {"broker", "topic", "app_id", "data_dir", "out", "jump_at", "jump_to", "gapless"}
The agent appends "offset" per record it is handed to `out`. When it is handed
`jump_at` it moves the aiokafka fetch position to `jump_to` behind Faust's back:
what a batch fetched from a stale position does after a restart
(pipeline/consumer.py). With `gapless` false it runs Faust's own App.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import faust

from nudgeflow.config.settings import WorkerSettings
from nudgeflow.pipeline.app import create_app


def build(spec: dict) -> faust.App:  # type: ignore[type-arg]
    settings = WorkerSettings(
        broker=spec["broker"], app_id=spec["app_id"], data_dir=Path(spec["data_dir"])
    )
    app = create_app(settings)
    if not spec["gapless"]:
        app = faust.App(
            app.conf.id,
            broker=app.conf.broker,
            datadir=app.conf.datadir,
            web_enabled=False,
            consumer_auto_offset_reset="earliest",
            broker_commit_interval=1.0,
            autodiscover=False,
        )
    topic = app.topic(spec["topic"], partitions=1, key_type=bytes, value_type=bytes)
    out = Path(spec["out"])
    jumped = False

    async def record(stream: faust.StreamT) -> None:  # type: ignore[type-arg]
        nonlocal jumped
        async for event in stream.events():
            offset = event.message.offset
            with out.open("a") as f:
                f.write(f"{offset}\n")
            if offset == spec["jump_at"] and not jumped:
                jumped = True
                await app.consumer._seek(event.message.tp, spec["jump_to"])  # type: ignore[attr-defined]

    app.agent(topic, name="record")(record)
    return app


def main() -> None:
    spec = json.loads(Path(sys.argv[1]).read_text())
    worker = faust.Worker(build(spec), loglevel="info", redirect_stdouts=False)
    worker.execute_from_commandline()


if __name__ == "__main__":
    main()
