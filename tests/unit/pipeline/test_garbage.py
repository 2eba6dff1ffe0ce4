"""The collector tuning (pipeline/garbage.py) on this interpreter's real collector, no mocks."""

from __future__ import annotations

import gc

import faust

from nudgeflow.observability import metrics
from nudgeflow.pipeline import garbage


def test_freeze_takes_the_survivors_out_of_later_collections() -> None:
    class Node:
        def __init__(self) -> None:
            self.me = self  # a cycle: only the collector could free it

    kept = Node()
    try:
        frozen = garbage.freeze()
        assert frozen == gc.get_freeze_count() > 0
        assert metrics.REGISTRY.get_sample_value("nudgeflow_gc_frozen_objects") == frozen
        assert not any(o is kept for o in gc.get_objects())  # not walked any more
        gc.collect()
        made_after = Node()
        assert any(o is made_after for o in gc.get_objects())  # new objects still are
    finally:
        gc.unfreeze()
    assert any(o is kept for o in gc.get_objects())


def test_install_schedules_the_freeze_with_the_app() -> None:
    app = faust.App("garbage-test", autodiscover=False, web_enabled=False)
    before = len(app._app_tasks)
    garbage.install(app)
    assert len(app._app_tasks) == before + 1  # started with the app, after its recovery
