"""The bare Faust baseline: one RocksDB table update per event, nothing else.

Run as `python -m nudgeflow.bench.bare_faust BROKER TOPIC APP_ID DATA_DIR PARTITIONS COUNT`.
It uses the same Faust app settings as a Nudgeflow worker (`create_app`), the
same raw serializers and store, and prints one JSON line when COUNT events
are done: `{"count": N, "first": t0, "last": t1, "cpu_s": c}` (time.time() of the
first and last event, CPU seconds in between), so the parent measures only
processing, not start-up.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import faust

from nudgeflow.pipeline.app import create_app
from nudgeflow.pipeline.settings import WorkerSettings
from nudgeflow.tables.schema import RAW_TABLE, RAW_TOPIC


def build(
    broker: str, topic: str, app_id: str, data_dir: Path, partitions: int, count: int
) -> faust.App:
    settings = WorkerSettings(
        broker=broker, app_id=app_id, data_dir=data_dir, partitions=partitions
    )
    app = create_app(settings)
    source = app.topic(topic, partitions=partitions, **RAW_TOPIC)
    table = app.Table("bare", default=None, partitions=partitions, **RAW_TABLE)
    seen = {"n": 0, "first": 0.0, "cpu": 0.0}

    async def update(stream: faust.StreamT) -> None:
        async for event in stream.events():
            key = event.message.key
            old = table.get(key)
            table[key] = event.message.value if old is None else old[:16] + event.message.value
            seen["n"] += 1
            if seen["n"] == 1:
                seen["first"], seen["cpu"] = time.time(), time.process_time()
            if seen["n"] == count:
                result = {
                    "count": count,
                    "first": seen["first"],
                    "last": time.time(),
                    "cpu_s": time.process_time() - seen["cpu"],
                }
                print(json.dumps(result), flush=True)

    app.agent(source, name="bare")(update)
    return app


def main(argv: list[str]) -> None:
    broker, topic, app_id, data_dir, partitions, count = argv
    Path(data_dir).mkdir(parents=True, exist_ok=True)
    app = build(broker, topic, app_id, Path(data_dir), int(partitions), int(count))
    worker = faust.Worker(app, loglevel="warning", redirect_stdouts=False)
    worker.execute_from_commandline()


if __name__ == "__main__":
    main(sys.argv[1:])
