"""`nudgeflow rules`: the live rules versions on `<prefix>.rules` (DESIGN §3.3).

`apply FILE` validates with the worker start's errors (naming rule and field), prints
a unified diff against the live version and publishes the next version (`--dry-run`:
not); `show [--version N]`, `history`, `rollback N` (publishes N's document again as
the next version), `pause NAME` / `resume NAME` (a version with the same document).
Every worker follows the topic and swaps within seconds (pipeline/live_rules.py).
Exit codes: 0 done, 1 no such version or rule, 2 invalid document, 3 another applier
won the version number (rebase on the one named and apply again).
"""

from __future__ import annotations

import asyncio
import getpass
import socket
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from nudgeflow.config.loader import ConfigError
from nudgeflow.config.versions import Conflict, RuleVersion, document_of
from nudgeflow.kafka import ruleset

T = TypeVar("T")


def _broker_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    fn = click.option("--topic-prefix", default="nudgeflow", show_default=True)(fn)
    return click.option("--broker", default="127.0.0.1:9092", show_default=True)(fn)


def _author() -> str:
    return f"{getpass.getuser()}@{socket.gethostname()}"


def _run(work: Awaitable[T]) -> T:
    """Run `work`; the refusals every subcommand shares become messages and exit codes."""
    try:
        return asyncio.run(_within(work))
    except ConfigError as exc:
        click.echo(f"error: nothing published:\n{exc}", err=True)
        sys.exit(2)
    except ruleset.DocumentTooLarge as exc:
        click.echo(f"error: nothing published: {exc}", err=True)
        sys.exit(2)
    except Conflict as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(3)
    except LookupError as exc:
        click.echo(f"error: {exc.args[0] if exc.args else exc}", err=True)
        sys.exit(1)


async def _within(work: Awaitable[T]) -> T:
    return await work


def _said(applied: ruleset.Applied | None, *, dry_run: bool = False) -> None:
    if applied is None:
        click.echo("nothing to do: already so")
        return
    click.echo(applied.diff or "(no change to the document)", nl=not applied.diff)
    r = applied.record
    if dry_run:
        click.echo(f"valid; dry run: nothing published (the next version would be {r.version})")
    else:
        click.echo(f"published version {r.version} (sha256 {r.sha256[:12]}, by {r.author})")


@click.group()
def command() -> None:
    """Live rules: apply, show, history, rollback, pause, resume."""


@command.command("apply")
@click.argument("file", type=click.Path(path_type=Path, exists=True, dir_okay=False))
@click.option("--dry-run", is_flag=True, help="validate and print the diff; publish nothing")
@click.option("--comment", default="", help="why, for the history")
@_broker_options
def apply_command(file: Path, dry_run: bool, comment: str, broker: str, topic_prefix: str) -> None:
    """Validate FILE, print its diff against the live version, publish it."""
    document = document_of(file)
    _said(
        _run(
            ruleset.apply(
                broker,
                topic_prefix,
                document,
                author=_author(),
                comment=comment,
                dry_run=dry_run,
                source=file.name,
            )
        ),
        dry_run=dry_run,
    )


@command.command()
@click.option("--version", "version", type=int, default=None, help="default: the live one")
@_broker_options
def show(version: int | None, broker: str, topic_prefix: str) -> None:
    """Print a version's document (with its paused rules)."""
    which: str | int = "live" if version is None else version
    record = _run(ruleset.load_version(broker, topic_prefix, which))
    click.echo(f"# version {record.version}  {_line(record)}")
    for name in record.paused:
        click.echo(f"# paused: {name}")
    click.echo(record.document, nl=not record.document.endswith("\n"))


def _line(r: RuleVersion) -> str:
    paused = f"  paused: {', '.join(r.paused)}" if r.paused else ""
    return f"{r.time}  {r.author}  sha256 {r.sha256[:12]}  {r.comment or '-'}{paused}"


@command.command()
@_broker_options
def history(broker: str, topic_prefix: str) -> None:
    """Every version, newest first."""
    won = _run(ruleset.read_versions(broker, ruleset.rules_topic(topic_prefix)))
    if not won:
        click.echo(f"{ruleset.rules_topic(topic_prefix)} holds no version yet")
    for number in sorted(won, reverse=True):
        click.echo(f"{number:>5}  {_line(won[number])}")


@command.command()
@click.argument("version", type=int)
@_broker_options
def rollback(version: int, broker: str, topic_prefix: str) -> None:
    """Publish VERSION's document and pauses again, as the next version."""
    _said(_run(ruleset.rollback(broker, topic_prefix, version, author=_author())))


@command.command()
@click.argument("name")
@_broker_options
def pause(name: str, broker: str, topic_prefix: str) -> None:
    """Pause rule NAME: its due sends are suppressed (reason paused), its runs go on."""
    _said(_run(ruleset.set_paused(broker, topic_prefix, name, True, author=_author())))


@command.command()
@click.argument("name")
@_broker_options
def resume(name: str, broker: str, topic_prefix: str) -> None:
    """Resume rule NAME: its later sends go out again."""
    _said(_run(ruleset.set_paused(broker, topic_prefix, name, False, author=_author())))
