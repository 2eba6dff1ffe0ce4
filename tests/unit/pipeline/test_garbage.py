"""The collector tuning (pipeline/garbage.py) on this interpreter's real collector, no mocks."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import faust
import pytest

from nudgeflow.pipeline import garbage, metrics


def _pauses(generation: int) -> float:
    value = metrics.REGISTRY.get_sample_value(
        "nudgeflow_gc_pause_seconds_count", {"generation": str(generation)}
    )
    return value or 0.0


@pytest.fixture
def timer() -> Iterator[garbage.PauseTimer]:
    timer = garbage.PauseTimer()
    gc.callbacks.append(timer)
    try:
        yield timer
    finally:
        gc.callbacks.remove(timer)


@pytest.mark.parametrize("generation", [0, 1, 2])
def test_each_collection_is_timed_under_its_generation(
    timer: garbage.PauseTimer, generation: int
) -> None:
    before = [_pauses(g) for g in range(3)]
    gc.collect(generation)
    after = [_pauses(g) for g in range(3)]
    assert after[generation] == before[generation] + 1
    assert [a - b for g, (a, b) in enumerate(zip(after, before)) if g != generation] == [0, 0]


def test_freeze_takes_the_survivors_out_of_later_full_collections() -> None:
    class Node:
        def __init__(self) -> None:
            self.me = self  # a cycle: only the collector could free it

    kept = Node()
    try:
        frozen = garbage.freeze()
        assert frozen == gc.get_freeze_count() > 0
        assert not any(o is kept for o in gc.get_objects())  # not walked any more
        gc.collect()
        made_after = Node()
        assert any(o is made_after for o in gc.get_objects())  # new objects still are
    finally:
        gc.unfreeze()
    assert any(o is kept for o in gc.get_objects())


def test_install_times_collections_and_schedules_the_freeze() -> None:
    app = faust.App("garbage-test", autodiscover=False, web_enabled=False)
    before = len(app._app_tasks)
    timers_before = sum(isinstance(cb, garbage.PauseTimer) for cb in gc.callbacks)
    try:
        garbage.install(app)
        garbage.install(app)  # a second worker in one process: one timer still
        assert len(app._app_tasks) == before + 2  # each install schedules its app's freeze
        assert sum(isinstance(cb, garbage.PauseTimer) for cb in gc.callbacks) == max(
            1, timers_before
        )
    finally:
        for cb in [cb for cb in gc.callbacks if isinstance(cb, garbage.PauseTimer)]:
            if timers_before == 0:
                gc.callbacks.remove(cb)
