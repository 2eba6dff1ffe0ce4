"""One worker for the module (both tests share its start-up) and the journeys' receiver."""

from __future__ import annotations

from pathlib import Path

from tests.fixtures.workers import hooked_worker
from tests.integration.journeys.conftest import hook

__all__ = ["consent_worker", "hook"]

consent_worker = hooked_worker(
    Path(__file__).parent / "configs" / "consent.yaml", "c", "CONSENT_HOOK_URL"
)
