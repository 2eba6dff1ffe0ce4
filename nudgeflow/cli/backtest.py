"""`nudgeflow backtest`: replay a JSONL event file through the live engine.

    nudgeflow backtest --config nudgeflow.yaml --events events.jsonl[.gz]
        [--until 2024-06-04T00:00:00Z] [--out triggers.jsonl]
        [--decisions decisions.jsonl] [--workers N] [--json]

    nudgeflow backtest --config NEW --compare OLD --events events.jsonl [--json]
        [--broker HOST:PORT --topic-prefix nudgeflow]   (OLD: a file, `live` or N)

Prints what each rule would have done (armed, fired, cancelled, suppressed
by reason, ...) and, for rules with an experiment, per-variant conversion
rates with confidence intervals, uplift and p-values. With --compare, the
same history runs under OLD too (backtest/compare.py): per rule both sides'
sends, suppressions, conversions and revenue, the differences, and the users
whose outcome changed. With --workers N the users are split over N processes
(backtest/parallel.py); the files and figures are the same as with one.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import click
import msgspec

from nudgeflow.backtest.compare import compare_file, render_compare_text
from nudgeflow.backtest.parallel import BanditRules, backtest_parallel
from nudgeflow.backtest.report import render_text
from nudgeflow.config.build import build_engine, engine_secret
from nudgeflow.config.loader import NudgeflowConfig, load_config


def parse_time(value: str) -> int:
    """ISO 8601 (naive means UTC) or epoch milliseconds -> epoch milliseconds."""
    text = value.strip()
    if text.lstrip("-").isdigit():
        return int(text)
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise click.BadParameter(f"expected ISO 8601 time or epoch ms, got {value!r}") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return int(parsed.timestamp() * 1000)


@click.command("backtest")
@click.option(
    "--config",
    "config_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    required=True,
    help="nudgeflow.yaml",
)
@click.option(
    "--events",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    required=True,
    help="JSON lines, one event per line (.gz accepted)",
)
@click.option("--until", default=None, help="fire timers due up to this time (default: last event)")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), help="triggers JSONL")
@click.option("--decisions", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--conversions", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--compare",
    "compare",
    metavar="OLD",
    default=None,
    help="what-if: also run OLD (a config file, or `live` or a version number on "
    "--broker's rules topic) and print what CONFIG would change",
)
@click.option("--broker", default=None, help="with --compare live|N: the Kafka bootstrap")
@click.option("--topic-prefix", default="nudgeflow", show_default=True)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="processes to split the users over (the output is the same as with one)",
)
@click.option("--json", "as_json", is_flag=True, help="print the summary as one JSON object")
def command(
    config_path: Path,
    events: Path,
    until: str | None,
    out: Path | None,
    decisions: Path | None,
    conversions: Path | None,
    compare: str | None,
    broker: str | None,
    topic_prefix: str,
    workers: int,
    as_json: bool,
) -> None:
    """Replay EVENTS through the rules of CONFIG on a simulated clock."""
    until_ms = parse_time(until) if until is not None else None
    config = _load(config_path)
    secret = engine_secret(warn=False)
    engine = build_engine(config, secret=secret)
    if compare is not None:
        if out or decisions or conversions or workers > 1:
            raise click.UsageError(
                "--out, --decisions, --conversions and --workers do not go with --compare"
            )
        old_config, label = _old_config(compare, broker, topic_prefix)
        old = build_engine(old_config, secret=secret)
        result = compare_file(
            engine, old, events, until_ms=until_ms, labels=(str(config_path), label)
        )
        click.echo(msgspec.json.encode(result).decode() if as_json else render_compare_text(result))
        return
    try:
        summary = backtest_parallel(
            engine,
            events,
            workers=workers,
            until_ms=until_ms,
            out=out,
            decisions=decisions,
            conversions=conversions,
        )
    except BanditRules as exc:
        raise click.UsageError(f"--workers {workers}: {exc}") from None
    if as_json:
        click.echo(msgspec.json.encode(summary).decode())
    else:
        click.echo(render_text(summary))


def _load(path: Path) -> NudgeflowConfig:
    try:
        return load_config(path)
    except (ValueError, OSError) as exc:
        raise click.ClickException(f"{path}: {exc}") from None


def _old_config(old: str, broker: str | None, prefix: str) -> tuple[NudgeflowConfig, str]:
    """--compare OLD: a config file, or `live` / a version number read from the rules
    topic; returns the config and how the report names it."""
    path = Path(old)
    if path.is_file():
        return _load(path), old
    if old != "live" and not old.isdigit():
        raise click.BadParameter(
            f"{old!r} is neither a config file nor 'live' or a version number",
            param_hint="--compare",
        )
    if broker is None:
        raise click.UsageError(
            f"--compare {old}: reading a version needs --broker (and --topic-prefix, "
            f"default nudgeflow): it is read from the <prefix>.rules topic"
        )
    return _version_config(old, broker, prefix)


def _version_config(which: str, broker: str, prefix: str) -> tuple[NudgeflowConfig, str]:
    """Version `which` ("live" or N) of `<prefix>.rules`, validated as a worker loads it
    (its paused rules paused, `${ENV}` references resolved here)."""
    import asyncio

    from aiokafka.errors import KafkaError

    from nudgeflow.config.versions import load_document
    from nudgeflow.kafka.ruleset import load_version, rules_topic

    topic = rules_topic(prefix)
    try:
        record = asyncio.run(load_version(broker, prefix, which))
    except LookupError as exc:
        raise click.ClickException(str(exc)) from None
    except (KafkaError, OSError, TimeoutError) as exc:
        raise click.ClickException(f"cannot read {topic} on {broker}: {exc}") from None
    source = f"{topic} version {record.version}"
    try:
        config = load_document(record.document, paused=record.paused, source=source)
    except (ValueError, OSError) as exc:
        raise click.ClickException(str(exc)) from None
    live = " (live)" if which == "live" else ""
    return config, f"version {record.version}{live} of {topic}"


if __name__ == "__main__":
    command()
