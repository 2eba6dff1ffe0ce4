"""The `delivered` table: which (trigger, destination) pairs are settled, for webhook dedupe.

Key `trigger_id|destination`, value one of `DELIVERED`, `RETRYING`, `DEAD`. A trigger
that upstream wrote twice reaches a destination once: the deliver agent skips a pair
that has any mark (agents/deliver.py). Partitioned like the triggers topic, so a mark
is written to the changelog partition of the trigger record that caused it.
"""

from __future__ import annotations

import faust

from nudgeflow.tables import options
from nudgeflow.tables.schema import raw_table

NAME = "delivered"
DELIVERED, RETRYING, DEAD = b"delivered", b"retrying", b"dead"


def key(trigger_id: str, destination: str) -> bytes:
    return f"{trigger_id}|{destination}".encode()


def define(app: faust.App, partitions: int) -> faust.Table:
    return raw_table(
        app,
        NAME,
        partitions,
        options.small(),
        "trigger_id|destination -> delivered/retrying/dead (webhook dedupe)",
    )
