"""The glibc heap tuning (pipeline/malloc.py) on this machine's libc: a real call, no mocks."""

from __future__ import annotations

import re
from pathlib import Path

import faust

from nudgeflow.observability import metrics
from nudgeflow.pipeline import malloc


def _trim_count() -> float:
    value = metrics.REGISTRY.get_sample_value("nudgeflow_malloc_trim_seconds_count")
    return value or 0.0


def test_this_machine_has_glibc_and_takes_the_threshold() -> None:
    assert malloc.configure() is True


def _rss_mb() -> float:
    status = Path("/proc/self/status").read_text()
    match = re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE)
    assert match is not None
    return int(match.group(1)) / 1024


def test_trim_gives_freed_heap_back_and_is_timed() -> None:
    """Every other 64 KB block freed: holes glibc keeps (RSS unchanged) until a trim."""
    malloc.configure()
    before = _trim_count()
    blocks = [bytearray(64 * 1024) for _ in range(2_000)]  # 125 MB, below the threshold
    kept = blocks[1::2]
    del blocks
    held = _rss_mb()
    took = malloc.trim()
    assert held - _rss_mb() > 40, "about 62 MB of freed blocks should go back"
    assert 0.0 <= took < 5.0
    assert _trim_count() == before + 1
    assert len(kept) == 1_000


def test_install_adds_a_periodic_trim_to_the_app() -> None:
    app = faust.App("malloc-test", autodiscover=False, web_enabled=False)
    before = len(app._app_tasks)
    malloc.install(app)
    assert len(app._app_tasks) == before + 1  # started with the app, like every Faust timer
