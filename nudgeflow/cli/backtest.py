"""`nudgeflow backtest`: replay a JSONL event file through the live engine.

    nudgeflow backtest --config nudgeflow.yaml --events events.jsonl[.gz]
        [--until 2024-06-04T00:00:00Z] [--out triggers.jsonl]
        [--decisions decisions.jsonl] [--json]

    nudgeflow backtest --config NEW --compare OLD --events events.jsonl [--json]

Prints what each rule would have done (armed, fired, cancelled, suppressed
by reason, ...) and, for rules with an experiment, per-variant conversion
rates with confidence intervals, uplift and p-values. With --compare, the
same history runs under OLD too (backtest/compare.py): per rule both sides'
sends, suppressions, conversions and revenue, the differences, and the users
whose outcome changed.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import click
import msgspec

from nudgeflow.backtest.compare import compare_file, render_compare_text
from nudgeflow.backtest.file import backtest_file
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
    help="what-if: also run OLD (a config file) and print what CONFIG would change",
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
    as_json: bool,
) -> None:
    """Replay EVENTS through the rules of CONFIG on a simulated clock."""
    until_ms = parse_time(until) if until is not None else None
    config = _load(config_path)
    secret = engine_secret(warn=False)
    engine = build_engine(config, secret=secret)
    if compare is not None:
        if out or decisions or conversions:
            raise click.UsageError("--out, --decisions and --conversions do not go with --compare")
        old = build_engine(_old_config(compare), secret=secret)
        result = compare_file(
            engine, old, events, until_ms=until_ms, labels=(str(config_path), compare)
        )
        click.echo(msgspec.json.encode(result).decode() if as_json else render_compare_text(result))
        return
    summary = backtest_file(
        engine, events, until_ms=until_ms, out=out, decisions=decisions, conversions=conversions
    )
    if as_json:
        click.echo(msgspec.json.encode(summary).decode())
    else:
        click.echo(render_text(summary))


def _load(path: Path) -> NudgeflowConfig:
    try:
        return load_config(path)
    except (ValueError, OSError) as exc:
        raise click.ClickException(f"{path}: {exc}") from None


def _old_config(old: str) -> NudgeflowConfig:
    """--compare OLD: a config file; `live` or a version number need the rules topic."""
    path = Path(old)
    if path.is_file():
        return _load(path)
    if old == "live" or old.isdigit():
        raise click.UsageError(
            f"--compare {old}: a live version needs --broker and a rules topic "
            "(not available in this build); give OLD as a config file"
        )
    raise click.BadParameter(
        f"{old!r} is neither a config file nor 'live' or a version number",
        param_hint="--compare",
    )


if __name__ == "__main__":
    command()
