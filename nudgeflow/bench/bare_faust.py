"""The bare Faust baseline: one RocksDB table update per event, nothing else.

Run as `python -m nudgeflow.bench.bare_faust BROKER TOPIC APP_ID DATA_DIR PARTITIONS COUNT
[OUT_TOPIC]`. It uses the same Faust app settings as a Nudgeflow worker (`create_app`),
the same raw serializers and store.

* Throughput (no OUT_TOPIC): prints one JSON line when COUNT events are done:
  `{"count": N, "first": t0, "last": t1, "cpu_s": c}` (time.time() of the first and
  last event, CPU seconds in between), so the parent measures only processing, not
  start-up.
* Latency (OUT_TOPIC given): after the table update, each event is answered with one
  record to OUT_TOPIC, sent the plain Faust way (`topic.send`) to the event's
  partition, as `{"trigger_id": "<key>"}`: what the latency bench reads from a
  worker's triggers topic. Runs until killed.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import faust

from nudgeflow.config.settings import WorkerSettings
from nudgeflow.pipeline.app import create_app
from nudgeflow.tables.schema import RAW_TABLE, RAW_TOPIC


@dataclass(frozen=True)
class BareFaust:
    """What one bare Faust agent reads, writes and counts; also its command line."""

    broker: str
    topic: str
    app_id: str
    data_dir: Path
    partitions: int
    count: int  # throughput: print the result after this many events (0: latency)
    out_topic: str | None = None  # latency: answer each event here

    def command(self) -> list[str]:
        """The command line that runs this agent in a subprocess (`main` below)."""
        return [
            sys.executable, "-m", "nudgeflow.bench.bare_faust",
            self.broker, self.topic, self.app_id, str(self.data_dir),
            str(self.partitions), str(self.count), *([self.out_topic] if self.out_topic else []),
        ]  # fmt: skip

    def spawn(self, log_path: Path, *, capture: bool) -> subprocess.Popen[str]:
        """Start it in its own session (so `kill` takes its children too), stderr to
        `log_path`; stdout piped when `capture` (throughput's result line)."""
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("ab") as log:
            return subprocess.Popen(
                self.command(),
                stdout=subprocess.PIPE if capture else subprocess.DEVNULL,
                stderr=log,
                start_new_session=True,
                text=True,
            )

    @classmethod
    def parse(cls, argv: list[str]) -> BareFaust:
        broker, topic, app_id, data_dir, partitions, count, *out_topic = argv
        return cls(
            broker, topic, app_id, Path(data_dir), int(partitions), int(count), *out_topic[:1]
        )


def kill(proc: subprocess.Popen[str]) -> int | None:
    """SIGKILL a spawned agent's session if it still runs; its exit code if it had ended."""
    exited = proc.poll()
    if exited is None:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(30)
    return exited


def answer(key: bytes | None) -> bytes:
    """The echo of a ping: its key (a user id, JSON-safe) as the trigger id."""
    return b'{"trigger_id":"' + (key or b"") + b'"}'


def build(spec: BareFaust) -> faust.App:
    settings = WorkerSettings(
        broker=spec.broker,
        app_id=spec.app_id,
        data_dir=spec.data_dir,
        partitions=spec.partitions,
    )
    app = create_app(settings)
    partitions, count = spec.partitions, spec.count
    source = app.topic(spec.topic, partitions=partitions, **RAW_TOPIC)
    out = app.topic(spec.out_topic, partitions=partitions, **RAW_TOPIC) if spec.out_topic else None
    table = app.Table("bare", default=None, partitions=partitions, **RAW_TABLE)
    seen = {"n": 0, "first": 0.0, "cpu": 0.0}

    async def update(stream: faust.StreamT) -> None:
        async for event in stream.events():
            message = event.message
            key = message.key
            old = table.get(key)
            table[key] = message.value if old is None else old[:16] + message.value
            if out is not None:
                await out.send(key=key, value=answer(key), partition=message.partition)
                continue
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
    spec = BareFaust.parse(argv)
    spec.data_dir.mkdir(parents=True, exist_ok=True)
    worker = faust.Worker(build(spec), loglevel="warning", redirect_stdouts=False)
    worker.execute_from_commandline()


if __name__ == "__main__":
    main(sys.argv[1:])
