"""`nudgeflow kafka`: run the local broker in the foreground until Ctrl-C or SIGTERM."""

from __future__ import annotations

import signal
import sys
import threading
from pathlib import Path
from types import FrameType

import click

from nudgeflow.kafka.broker import KafkaStartError, LocalKafka
from nudgeflow.kafka.jars import DEFAULT_VERSION, KafkaSetupError


@click.command("kafka")
@click.option("--port", type=click.IntRange(1, 65535), default=9092, show_default=True)
@click.option(
    "--controller-port",
    type=click.IntRange(1, 65535),
    default=None,
    help="KRaft controller listener port  [default: a free port]",
)
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Keep topics here across runs  [default: a temporary dir, removed on exit]",
)
@click.option("--version", "version", default=DEFAULT_VERSION, show_default=True)
@click.option("--heap", default="512m", show_default=True, help="JVM heap (-Xmx)")
@click.option("--partitions", type=click.IntRange(1, 1024), default=4, show_default=True)
@click.option("--timeout", type=float, default=120.0, show_default=True, help="Start timeout (s)")
def command(
    port: int,
    controller_port: int | None,
    data_dir: Path | None,
    version: str,
    heap: str,
    partitions: int,
    timeout: float,
) -> None:
    """Start a single-node Apache Kafka broker (KRaft) from cached Maven Central jars."""
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    kafka = LocalKafka(
        port=port,
        controller_port=controller_port,
        data_dir=data_dir,
        version=version,
        heap=heap,
        num_partitions=partitions,
    )
    click.echo(f"Starting Apache Kafka {version} (first run fetches jars from Maven Central)...")
    try:
        try:
            kafka.start(timeout=timeout)
        except (KafkaSetupError, KafkaStartError) as exc:
            raise click.ClickException(str(exc)) from exc
        click.echo(f"Kafka ready in {kafka.start_seconds:.1f}s; bootstrap: {kafka.bootstrap}")
        click.echo(f"data: {kafka.data_dir}  log: {kafka.log_path}")
        click.echo("Press Ctrl-C to stop.")
        while not stop.wait(0.5):
            if not kafka.running:
                raise click.ClickException(f"Kafka exited unexpectedly; see {kafka.log_path}")
        click.echo("Stopping Kafka...")
    finally:
        kafka.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    click.echo("Kafka stopped.")


if __name__ == "__main__":
    sys.exit(command())
