"""The nudgeflow.yaml files the live scenarios run with, written next to the run's data."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from nudgeflow.config.loader import DEFAULT_CONFIG

INSTANT_RULE = "instant"
TIMER_RULE = "timer"
TIMER_DELAY_S = 3600  # deadline = event ts + 1 h: the bench chooses ts to place deadlines


def default_config() -> Path:
    """The five default rules (throughput, memory, recovery)."""
    return DEFAULT_CONFIG


def latency_config(receiver_url: str | None) -> dict[str, Any]:
    """One immediate rule, no limits; with a receiver, delivered there (loopback allowed)."""
    rule: dict[str, Any] = {"name": INSTANT_RULE, "trigger": "ping"}
    config: dict[str, Any] = {"rules": [rule]}
    if receiver_url is not None:
        config["destinations"] = {"bench": {"url": receiver_url, "allow_private": True}}
        config["delivery"] = {"retry_schedule": ["1s"]}
    return config


def timers_config() -> dict[str, Any]:
    """One delayed rule: every `arm` event puts one timer in the index."""
    return {"rules": [{"name": TIMER_RULE, "trigger": "arm", "delay": f"{TIMER_DELAY_S}s"}]}


def write_config(directory: Path, name: str, config: dict[str, Any]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path
