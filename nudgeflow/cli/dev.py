"""`nudgeflow dev`: the embedded default, like `temporal server start-dev`.

One process tree: a local single-node Kafka (KRaft, jars from Maven Central,
cached), a worker with its web server, a demo webhook receiver that verifies
and prints every delivery, and sample traffic that makes every default rule
fire within a minute (the dev config shortens the delays and says so).
"""

from __future__ import annotations

import base64
import contextlib
import os
import secrets
from pathlib import Path
from typing import Any

from mode import Service

from nudgeflow import worker
from nudgeflow.cli.demo import Clicks, DemoTraffic
from nudgeflow.config.loader import DEV_CONFIG, load_config
from nudgeflow.config.settings import resolve_settings
from nudgeflow.kafka.broker import LocalKafka, free_port


class DemoReceiver(Service):
    def __init__(self, port: int, secret: str, clicks: Clicks | None = None, **kwargs: Any) -> None:
        self.port = port
        self.secret = secret
        self.clicks = clicks
        self._runner: object | None = None
        super().__init__(**kwargs)

    async def on_start(self) -> None:
        from nudgeflow.cli.receiver import start_demo_receiver

        self._runner = await start_demo_receiver(self.port, self.secret, on_delivery=self.clicks)

    async def on_stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()  # type: ignore[attr-defined]


def _port_or_free(port: int) -> int:
    import socket

    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return free_port()
    return port


# Delivery, the demo traffic and the receiver at info; the libraries' info lines, and our
# plumbing's "Starting..."/"Stopping..." of every service, are start-up chatter a
# newcomer does not need, so they show from warning up.
QUIET_LIBRARIES = dict.fromkeys(
    (
        "faust",
        "mode",
        "aiokafka",
        "rocksdict",
        "aiohttp",
        "nudgeflow.pipeline",
        "nudgeflow.analytics",
        "nudgeflow.web",
    ),
    "warning",
)


def banner(bootstrap: str, prefix: str, url: str, receiver_port: int) -> str:
    return (
        f"\nNudgeflow dev is up.\n"
        f"  Console         : {url}/\n"
        f"  Send events     : POST {url}/events   (or WebSocket {url}/ws/events)\n"
        f"  Health / ready  : {url}/health  {url}/ready\n"
        f"  Metrics         : {url}/metrics\n"
        f"  Kafka bootstrap : {bootstrap}  (topics {prefix}.*)\n"
        f"  Demo receiver   : http://127.0.0.1:{receiver_port}/webhooks\n"
        f"Ctrl-C stops everything.\n"
    )


def run_dev(
    *, config_path: Path | None, kafka_port: int, web_port: int, data_dir: Path, demo: bool
) -> None:
    data_dir.mkdir(parents=True, exist_ok=True)
    receiver_port = _port_or_free(web_port + 1)
    demo_secret = os.environ.get("NUDGEFLOW_DEMO_SECRET") or (
        "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
    )
    os.environ.setdefault("NUDGEFLOW_DEMO_PORT", str(receiver_port))
    os.environ["NUDGEFLOW_DEMO_SECRET"] = demo_secret
    config = load_config(config_path or DEV_CONFIG)

    with LocalKafka(port=_port_or_free(kafka_port), data_dir=data_dir / "kafka") as kafka:
        settings = resolve_settings(
            config.settings,
            flags={
                "broker": kafka.bootstrap,
                "web_port": web_port,
                "data_dir": data_dir / "worker",
                "log_level": "info",
            },
        )
        parts = worker.assemble(config, settings)
        url = f"http://{settings.web_host}:{settings.web_port}"
        print(banner(kafka.bootstrap, settings.topic_prefix, url, receiver_port), flush=True)
        services: list[Service] = []
        if demo:
            events = url + "/events"
            receiver = DemoReceiver(receiver_port, demo_secret, Clicks(events))
            services += [receiver, DemoTraffic(events)]
        with contextlib.suppress(SystemExit):  # Ctrl-C: fall through to stop Kafka
            worker.run(parts, extra=services, loglevel="info", levels=QUIET_LIBRARIES)
