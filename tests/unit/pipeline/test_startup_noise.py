"""aiokafka's retried start-up errors show at debug, for the start-up window only."""

from __future__ import annotations

import logging

import pytest

from nudgeflow.pipeline import provision


class _Kept(logging.Handler):
    """Keeps what reaches the fetcher's logger, whatever other tests in this process did to
    propagation and levels (an in-process `dictConfig` may disable or re-level loggers)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_transient_client_errors_are_debug_during_start_up(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fetcher = logging.getLogger("aiokafka.consumer.fetcher")
    monkeypatch.setattr(fetcher, "disabled", False)
    monkeypatch.setattr(fetcher, "level", logging.DEBUG)
    kept = _Kept()
    fetcher.addHandler(kept)
    try:
        provision.quiet_startup_noise(window_s=60)
        fetcher.error("Failed fetch offsets from 1: [Error 6] NotLeaderForPartitionError: x")
        fetcher.error("Unexpected error in fetcher routine")  # not a known transient
        provision.quiet_startup_noise(window_s=0)  # the window has passed
        fetcher.error("Failed fetch offsets from 1: [Error 6] NotLeaderForPartitionError: y")
    finally:
        fetcher.removeHandler(kept)
    assert [(r.levelname, r.getMessage()[-1]) for r in kept.records] == [
        ("DEBUG", "x"),
        ("ERROR", "e"),
        ("ERROR", "y"),
    ]
    assert len([f for f in fetcher.filters if isinstance(f, provision._StartupNoise)]) == 1
