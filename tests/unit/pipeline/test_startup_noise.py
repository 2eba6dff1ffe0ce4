"""aiokafka's retried start-up errors show at debug, for the start-up window only."""

from __future__ import annotations

import logging

import pytest

from nudgeflow.pipeline import provision


def test_transient_client_errors_are_debug_during_start_up(
    caplog: pytest.LogCaptureFixture,
) -> None:
    fetcher = logging.getLogger("aiokafka.consumer.fetcher")
    provision.quiet_startup_noise(window_s=60)
    with caplog.at_level(logging.DEBUG, logger="aiokafka"):
        fetcher.error("Failed fetch offsets from 1: [Error 6] NotLeaderForPartitionError: x")
        fetcher.error("Unexpected error in fetcher routine")  # not a known transient
        provision.quiet_startup_noise(window_s=0)  # the window has passed
        fetcher.error("Failed fetch offsets from 1: [Error 6] NotLeaderForPartitionError: y")
    assert [(r.levelname, r.getMessage()[-1]) for r in caplog.records] == [
        ("DEBUG", "x"),
        ("ERROR", "e"),
        ("ERROR", "y"),
    ]
    assert len([f for f in fetcher.filters if isinstance(f, provision._StartupNoise)]) == 1
