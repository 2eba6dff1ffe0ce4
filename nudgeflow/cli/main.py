"""The `nudgeflow` command line: thin wrappers; the work lives in the packages."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from nudgeflow import __version__


@click.group()
@click.version_option(__version__, prog_name="nudgeflow")
def main() -> None:
    """Nudgeflow: real-time behavioral triggers on Kafka."""


_config_option = click.option(
    "--config",
    "config_path",
    type=click.Path(path_type=Path, exists=True, dir_okay=False),
    default=None,
    help="nudgeflow.yaml (default: the built-in five rules)",
)


@main.command()
@_config_option
@click.option("--broker", default=None, help="Kafka bootstrap servers host:port")
@click.option("--web-port", type=int, default=None)
@click.option("--web-host", default=None)
@click.option("--data-dir", type=click.Path(path_type=Path), default=None)
@click.option("--partitions", type=int, default=None)
@click.option("--topic-prefix", default=None)
@click.option("--log-level", default=None)
def worker(config_path: Path | None, **flags: object) -> None:
    """Run a worker: evaluate rules, fire timers, deliver webhooks, serve HTTP."""
    from nudgeflow import worker as worker_mod
    from nudgeflow.config.loader import ConfigError
    from nudgeflow.config.settings import SettingsError

    try:
        parts = worker_mod.prepare(config_path, flags)
    except (ConfigError, SettingsError) as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    worker_mod.run(parts)


@main.command()
@click.argument("file", type=click.Path(path_type=Path, exists=True, dir_okay=False))
@click.option("--broker", default="127.0.0.1:9092", show_default=True)
@click.option("--topic-prefix", default="nudgeflow", show_default=True)
def send(file: Path, broker: str, topic_prefix: str) -> None:
    """Produce events from a JSONL file (one JSON event per line) to <prefix>.events."""
    import asyncio

    from nudgeflow.cli.send import send_file

    sent = asyncio.run(send_file(file, broker=broker, topic=f"{topic_prefix}.events"))
    click.echo(f"sent {sent} events to {topic_prefix}.events on {broker}")


@main.command()
@_config_option
@click.option("--kafka-port", type=int, default=9092, show_default=True)
@click.option("--web-port", type=int, default=6066, show_default=True)
@click.option("--data-dir", type=click.Path(path_type=Path), default=Path("var/dev"))
@click.option("--no-demo", is_flag=True, help="no demo receiver and sample traffic")
def dev(
    config_path: Path | None, kafka_port: int, web_port: int, data_dir: Path, no_demo: bool
) -> None:
    """The embedded default: local Kafka + worker + web + demo receiver + sample traffic."""
    from nudgeflow.cli.dev import run_dev

    run_dev(
        config_path=config_path,
        kafka_port=kafka_port,
        web_port=web_port,
        data_dir=data_dir,
        demo=not no_demo,
    )


def _attach_subcommands() -> None:
    """Commands that live with their package; imported here so each stays self-contained."""
    from nudgeflow.cli.backtest import command as backtest_command
    from nudgeflow.cli.bench import command as bench_command
    from nudgeflow.cli.dlq import command as dlq_command
    from nudgeflow.cli.explain import command as explain_command
    from nudgeflow.cli.forget import command as forget_command
    from nudgeflow.cli.kafka import command as kafka_command
    from nudgeflow.cli.rules import command as rules_command

    main.add_command(kafka_command, "kafka")
    main.add_command(backtest_command, "backtest")
    main.add_command(dlq_command, "dlq")
    main.add_command(bench_command, "bench")
    main.add_command(explain_command, "explain")
    main.add_command(forget_command, "forget")
    main.add_command(rules_command, "rules")


_attach_subcommands()
