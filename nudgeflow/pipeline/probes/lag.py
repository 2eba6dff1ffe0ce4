"""Consumer lag per topic and partition, read from the Faust consumer at scrape time.

lag = log end offset (the highwater the broker reported with the last fetch)
minus the group's committed offset, for every partition this worker consumes
(table changelogs excluded: recovery has its own progress). The committed
offset is what survives a crash, so this is the work a restart would redo;
the deliver agent commits only settled records, so in-flight webhooks count.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from faust.types import TP, AppT

from nudgeflow.observability.metrics import Sample


def lag_of(highwater: int | None, committed: int | None, read: int | None) -> int | None:
    """Messages behind, or None when unknown (nothing fetched, nothing committed)."""
    if highwater is None:
        return None
    position = committed if committed is not None else (read + 1 if read is not None else None)
    if position is None:
        return 0 if highwater == 0 else None
    return max(0, highwater - position)


def _committed_offsets(app: AppT) -> Mapping[TP, int | None]:
    # Faust keeps the committed offsets it fetched at assignment and every one
    # it committed since; the monitor only sees the latter.
    consumer: Any = app.consumer
    offsets = getattr(consumer, "_committed_offset", None)
    return offsets if offsets is not None else app.monitor.tp_committed_offsets


def _highwater(app: AppT, tp: TP) -> int | None:
    try:
        return app.consumer.highwater(tp)
    except Exception:  # not fetched yet, or revoked since assignment() was read
        return None


def sample_lag(app: AppT) -> Iterator[Sample]:
    """(topic, partition) -> messages behind, for the partitions assigned here."""
    if app.rebalancing:
        return
    try:
        assigned = app.consumer.assignment()
    except Exception:  # the consumer has not started yet
        return
    changelogs = app.tables.changelog_topics
    committed = _committed_offsets(app)
    read = app.monitor.tp_read_offsets
    for tp in sorted(assigned):
        if tp.topic in changelogs:
            continue
        lag = lag_of(_highwater(app, tp), committed.get(tp), read.get(tp))
        if lag is not None:
            yield (tp.topic, str(tp.partition)), float(lag)
