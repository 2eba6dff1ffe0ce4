"""Helpers for live pipeline tests: read topics of a worker's prefix."""

from __future__ import annotations

from pathlib import Path

import pytest

CONFIGS = Path(__file__).parent / "configs"


@pytest.fixture
def live_config() -> Path:
    return CONFIGS / "live.yaml"


@pytest.fixture
def evaluate_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Workers started by the test run rules and timers but deliver no webhooks."""
    monkeypatch.setenv("NUDGEFLOW_ROLES", "evaluate")
