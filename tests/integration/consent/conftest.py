"""One worker for the module (both tests share its start-up) and the journeys' receiver."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fixtures.receivers import Receiver
from tests.fixtures.workers import WorkerProcess, ready_worker
from tests.integration.journeys.conftest import hook

__all__ = ["hook"]

CONFIG = Path(__file__).parent / "configs" / "consent.yaml"


@pytest.fixture(scope="module")
def consent_worker(
    kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory, hook: Receiver
) -> Iterator[WorkerProcess]:
    data_dir = tmp_path_factory.mktemp("consent") / "worker"
    with ready_worker(CONFIG, kafka_bootstrap, data_dir, "c", {"CONSENT_HOOK_URL": hook.url}) as w:
        yield w
