"""nudgeflow.yaml -> a validated `NudgeflowConfig` (DESIGN §3, §4).

Everything is checked at start so a mistake fails the start, not the 3 a.m.
send: unknown keys, durations, `when` expressions, templates (compiled and
rendered against a sample), destinations a rule names, duplicate rules,
experiment weights, worker settings. Every problem is reported as
`<file>: <where>: <what>`, e.g.
`nudgeflow.yaml: rules[abandoned_cart].inactivity: invalid duration '30x' (use 30s, 15m, 2h, 7d)`.

`${NAME}` (or `${NAME:-default}`) in any string value is replaced from the
environment; a missing variable is an error naming it. Values are never
echoed in errors, so secrets stay out of logs.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from nudgeflow.config.consent import (
    ConsentModel,
    DedupeModel,
    compile_consent,
    compile_dedupe,
    consent_problems,
)
from nudgeflow.config.destinations import DeliverySettings, Destination
from nudgeflow.config.rules import (
    LimitsModel,
    RuleModel,
    compile_limits,
    compile_rule,
    rule_problems,
)
from nudgeflow.config.settings import SettingsError, resolve_settings
from nudgeflow.engine.dedupe import Dedupe
from nudgeflow.engine.rules import Limits, Rule

DEFAULTS_DIR = Path(__file__).resolve().parent.parent / "defaults"
DEFAULT_CONFIG = DEFAULTS_DIR / "nudgeflow.yaml"
DEV_CONFIG = DEFAULTS_DIR / "dev.yaml"
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_CHECK_SECRET = b"nudgeflow-config-check"


class ConfigError(ValueError):
    """Names the file and, for each problem, the rule and field."""


class ConfigFile(BaseModel):
    """The file as written."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    settings: dict[str, Any] = {}
    limits: LimitsModel = Field(default_factory=LimitsModel)
    destinations: dict[str, Destination] = {}
    delivery: DeliverySettings = Field(default_factory=lambda: DeliverySettings.model_validate({}))
    templates_dir: str | None = None  # relative to the file; default ./templates if present
    templates: dict[str, str] = {}  # inline templates by name (win over files)
    consent: ConsentModel | None = None  # none: no consent check (config/consent.py)
    dedupe: DedupeModel = Field(default_factory=DedupeModel)
    rules: list[RuleModel] = []


@dataclass(frozen=True)
class NudgeflowConfig:
    source: str  # file name, for messages
    settings: dict[str, Any]  # raw `settings:` section, for pipeline.settings.resolve_settings
    destinations: dict[str, Destination]
    delivery: DeliverySettings
    templates_dir: Path | None
    inline_templates: dict[str, str]
    rules: tuple[Rule, ...]
    limits: Limits  # with the consent check (limits.consent), if configured
    file: ConfigFile
    dedupe: Dedupe = dataclasses.field(default_factory=Dedupe)


def load_config(path: Path, *, env: Mapping[str, str] | None = None) -> NudgeflowConfig:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    return load_config_text(text, base_dir=path.parent, env=env, source=path.name)


def load_config_text(
    text: str,
    *,
    base_dir: Path,
    env: Mapping[str, str] | None = None,
    source: str = "nudgeflow.yaml",
) -> NudgeflowConfig:
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else "yaml"
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{source}: {where}: {problem}") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: the file must be a mapping (settings, rules, ...)")
    environ = os.environ if env is None else env
    missing: list[str] = []
    data = _substitute(raw, environ, "", missing)
    if missing:
        raise ConfigError("\n".join(f"{source}: {m}" for m in missing))
    try:
        model = ConfigFile.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(
            "\n".join(f"{source}: {p}" for p in _pydantic_problems(exc, data))
        ) from None
    problems = list(_problems(model, data, base_dir))
    if problems:
        raise ConfigError("\n".join(f"{source}: {p}" for p in problems))
    names = list(model.destinations)
    return NudgeflowConfig(
        source=source,
        settings=dict(model.settings),
        destinations=dict(model.destinations),
        delivery=model.delivery,
        templates_dir=_templates_dir(model, base_dir),
        inline_templates=dict(model.templates),
        rules=tuple(compile_rule(r, all_destinations=names) for r in model.rules),
        limits=replace(
            compile_limits(model.limits),
            consent=compile_consent(model.consent, model.destinations),
        ),
        file=model,
        dedupe=compile_dedupe(model.dedupe),
    )


def _substitute(value: Any, env: Mapping[str, str], where: str, missing: list[str]) -> Any:
    if isinstance(value, str):

        def repl(m: re.Match[str]) -> str:
            name, default = m.group(1), m.group(2)
            if name in env:
                return env[name]
            if default is not None:
                return default
            missing.append(f"{where or 'value'}: environment variable {name} is not set")
            return ""

        return _ENV_REF.sub(repl, value) if "${" in value else value
    if isinstance(value, dict):
        return {k: _substitute(v, env, _join(where, k), missing) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v, env, f"{where}[{i}]", missing) for i, v in enumerate(value)]
    return value


def _join(where: str, key: Any) -> str:
    return f"{where}.{key}" if where else str(key)


def _rule_label(data: Mapping[str, Any], index: int) -> str:
    rules = data.get("rules")
    if isinstance(rules, list) and index < len(rules) and isinstance(rules[index], dict):
        name = rules[index].get("name")
        if isinstance(name, str) and name:
            return name
    return str(index)


def _location(loc: tuple[Any, ...], data: Mapping[str, Any]) -> str:
    out = ""
    parts = list(loc)
    i = 0
    while i < len(parts):
        part = parts[i]
        if part == "rules" and i == 0 and i + 1 < len(parts) and isinstance(parts[1], int):
            out = f"rules[{_rule_label(data, parts[1])}]"
            i += 2
            continue
        if isinstance(part, int):
            out += f"[{part}]"
        elif isinstance(part, str) and ("[" in part or ("-" in part and "(" in part)):
            pass  # pydantic's validator/union tags, not a field
        else:
            out = _join(out, part)
        i += 1
    return out or "(top level)"


def _pydantic_problems(exc: ValidationError, data: Mapping[str, Any]) -> list[str]:
    seen: set[str] = set()
    out: list[str] = []
    for err in exc.errors(include_input=False, include_url=False):
        where = _location(tuple(err["loc"]), data)
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        elif err["type"] == "missing":
            msg = "required field missing"
        line = f"{where}: {msg}"
        if line not in seen:
            seen.add(line)
            out.append(line)
    return out


def _templates_dir(model: ConfigFile, base_dir: Path) -> Path | None:
    if model.templates_dir is not None:
        return (base_dir / model.templates_dir).resolve()
    default = base_dir / "templates"
    return default.resolve() if default.is_dir() else None


def _problems(model: ConfigFile, data: Mapping[str, Any], base_dir: Path) -> Iterator[str]:
    try:
        resolve_settings(model.settings, env={}, flags={})
    except SettingsError as exc:
        yield str(exc)
    yield from consent_problems(model.consent)
    templates_dir = _templates_dir(model, base_dir)
    if templates_dir is not None and not templates_dir.is_dir():
        yield f"templates_dir: directory {model.templates_dir!r} not found"
        templates_dir = None
    from nudgeflow.engine.templates import TemplateError, Templates

    templates = Templates(templates_dir, secret=_CHECK_SECRET, inline=model.templates)
    checked: dict[str, str | None] = {}
    names_seen: set[str] = set()
    for rule in model.rules:
        label = f"rules[{rule.name}]"
        if rule.name in names_seen:
            yield f"{label}.name: duplicate rule name {rule.name!r}"
        names_seen.add(rule.name)
        for field, message in rule_problems(rule):
            yield f"{label}.{field}: {message}"
        for field, dest in rule.destination_refs():
            if dest not in model.destinations:
                known = ", ".join(sorted(model.destinations)) or "none configured"
                yield f"{label}.{field}: unknown destination {dest!r} (known: {known})"
        for field, name in rule.templates():
            if name not in checked:
                try:
                    templates.check(name)
                    checked[name] = None
                except TemplateError as exc:
                    checked[name] = str(exc)
            problem = checked[name]
            if problem is not None:
                yield f"{label}.{field}: {problem}"
