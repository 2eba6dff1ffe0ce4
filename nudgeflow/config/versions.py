"""Rule versions (DESIGN §3.3): the record on `<prefix>.rules`, and the pure logic around it.

One record per version: `{version, sha256, author, time, comment, document, paused,
expected, nonce}`. `document` is the YAML text with its `${ENV}` references left as
written (each worker resolves them; a secret never reaches Kafka) and the templates of
a `templates_dir` copied in as inline `templates:` (so a version is self-contained).
`paused` lists the rules paused in that version: pause and resume publish a new version
with the same document, so a version is the whole live behaviour and a rollback brings
back its pauses too.

Concurrent applies: an applier reads the live version N and publishes N+1 with
`expected: N` under the key `<N+1>:<nonce>`. Two records may then claim N+1; the one
at the lower offset wins (`settle`), on every reader alike, and compaction keeps both
(different keys). The loser finds out by reading back (`Conflict`, naming the winner).
"""

from __future__ import annotations

import difflib
import hashlib
import uuid
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import msgspec
import yaml

from nudgeflow.config.loader import NudgeflowConfig, load_config_text

NO_DIR = Path("/nonexistent-nudgeflow-rules")  # a version's document has no files beside it
MAX_DOCUMENT_BYTES = 1_000_000  # PUT /rules answers 413 above this; apply refuses it


class RuleVersion(msgspec.Struct, kw_only=True, omit_defaults=True):
    version: int
    sha256: str
    author: str
    time: str  # ISO 8601 UTC
    document: str
    comment: str = ""
    paused: list[str] = []
    expected: int = 0  # the live version the applier read (0: the topic was empty)
    nonce: str = ""

    @property
    def key(self) -> bytes:
        return f"{self.version}:{self.nonce}".encode()


class Conflict(Exception):
    """Another applier's record won the version number this one asked for."""

    def __init__(self, wanted: int, winner: RuleVersion | None) -> None:
        self.wanted = wanted
        self.winner = winner
        self.live_version = winner.version if winner is not None else 0
        if winner is None:
            said = f"version {wanted - 1} is not live (no version is)"
        else:
            said = (
                f"version {winner.version} was published by {winner.author} at {winner.time}"
                f" ({winner.comment or 'no comment'})"
            )
        super().__init__(f"{said}; rebase on version {self.live_version} and apply again")


_encoder = msgspec.json.Encoder()


def encode_version(record: RuleVersion) -> bytes:
    return _encoder.encode(record)


def decode_version(data: bytes) -> RuleVersion:
    return msgspec.json.decode(data, type=RuleVersion)


def sha256_of(document: str, paused: Iterable[str] = ()) -> str:
    digest = hashlib.sha256(document.encode())
    for name in sorted(paused):
        digest.update(b"\x00paused:" + name.encode())
    return digest.hexdigest()


def new_version(
    document: str,
    *,
    live: RuleVersion | None,
    author: str,
    time: str,
    comment: str = "",
    paused: Iterable[str] = (),
) -> RuleVersion:
    """The record that would follow `live` (None: the first version)."""
    paused = sorted(set(paused))
    return RuleVersion(
        version=(live.version if live else 0) + 1,
        sha256=sha256_of(document, paused),
        author=author,
        time=time,
        comment=comment,
        document=document,
        paused=paused,
        expected=live.version if live else 0,
        nonce=uuid.uuid4().hex,
    )


def settle(records: Iterable[RuleVersion]) -> dict[int, RuleVersion]:
    """Version number -> its record, from records in offset order: the first one wins."""
    won: dict[int, RuleVersion] = {}
    for record in records:
        won.setdefault(record.version, record)
    return won


def live_of(won: Mapping[int, RuleVersion]) -> RuleVersion | None:
    return won[max(won)] if won else None


def check_won(mine: RuleVersion, won: Mapping[int, RuleVersion]) -> None:
    """Raise `Conflict` unless `mine` is the record that holds its version number."""
    winner = won.get(mine.version)
    if winner is not None and winner.nonce != mine.nonce:
        raise Conflict(mine.version, winner)


def document_of(path: Path) -> str:
    """The document to publish for the file at `path`: its text as written, or, when it
    uses a templates directory, the same with those templates copied in inline (inline
    templates written in the file win, as they do at load)."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    raw = yaml.safe_load(text)
    if not isinstance(raw, dict):
        return text
    named = raw.get("templates_dir")
    directory = path.parent / named if isinstance(named, str) else path.parent / "templates"
    if not directory.is_dir():
        return text
    files = {
        p.relative_to(directory).as_posix(): p.read_text(encoding="utf-8")
        for p in sorted(directory.rglob("*"))
        if p.is_file() and not p.name.startswith(".")
    }
    inline = raw.get("templates")
    raw["templates"] = {**files, **(inline if isinstance(inline, dict) else {})}
    raw.pop("templates_dir", None)
    return yaml.safe_dump(raw, sort_keys=False, allow_unicode=True)


def load_document(
    document: str,
    *,
    paused: Iterable[str] = (),
    env: Mapping[str, str] | None = None,
    source: str = "nudgeflow.yaml",
) -> NudgeflowConfig:
    """Validate a version's document exactly as the worker start does (ConfigError names
    rule and field), with its paused rules marked; an unknown paused rule is an error."""
    from dataclasses import replace

    from nudgeflow.config.loader import ConfigError

    config = load_config_text(document, base_dir=NO_DIR, env=env, source=source)
    wanted = set(paused)
    unknown = wanted - {r.name for r in config.rules}
    if unknown:
        raise ConfigError(
            "\n".join(f"{source}: paused: no rule {name!r}" for name in sorted(unknown))
        )
    if not wanted:
        return config
    rules = tuple(replace(r, paused=True) if r.name in wanted else r for r in config.rules)
    return replace(config, rules=rules)


def rule_names(document: str) -> list[str]:
    """The names of the rules a document declares (for pause/resume, before validation)."""
    try:
        raw: Any = yaml.safe_load(document)
    except Exception:  # not YAML: validation says where
        return []
    rules = raw.get("rules") if isinstance(raw, dict) else None
    if not isinstance(rules, list):
        return []
    return [r["name"] for r in rules if isinstance(r, dict) and isinstance(r.get("name"), str)]


def diff(old: RuleVersion | None, document: str, paused: Iterable[str] = ()) -> str:
    """A unified diff from `old` (None: nothing live) to `document` and its pauses."""
    before = _with_pauses(old.document, old.paused) if old is not None else ""
    after = _with_pauses(document, paused)
    old_name = f"version {old.version}" if old is not None else "(nothing live)"
    lines = difflib.unified_diff(
        before.splitlines(keepends=True),
        after.splitlines(keepends=True),
        fromfile=old_name,
        tofile="new",
    )
    return "".join(line if line.endswith("\n") else line + "\n" for line in lines)


def _with_pauses(document: str, paused: Iterable[str]) -> str:
    body = document if document.endswith("\n") or not document else document + "\n"
    names = sorted(paused)
    if not names:
        return body
    return body + "".join(f"# paused: {name}\n" for name in names)


def history(won: Mapping[int, RuleVersion]) -> list[dict[str, Any]]:
    """Every version, newest first: number, sha256, author, time, comment, paused, and
    the unified diff against the version before it (GET /rules/history, the console)."""
    out: list[dict[str, Any]] = []
    previous: RuleVersion | None = None
    for number in sorted(won):
        record = won[number]
        out.append(
            {
                "version": record.version,
                "sha256": record.sha256,
                "author": record.author,
                "time": record.time,
                "comment": record.comment,
                "paused": list(record.paused),
                "diff": diff(previous, record.document, record.paused),
            }
        )
        previous = record
    out.reverse()
    return out
