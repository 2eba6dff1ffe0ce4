"""The timer-index measurement fires exactly the due timers, through the live key layout."""

from __future__ import annotations

import time
from pathlib import Path

from rocksdict import Options, Rdict

from nudgeflow.bench import configs
from nudgeflow.bench.timers import _armed, _fire, fire_cost_ms
from nudgeflow.config.build import build_engine
from nudgeflow.config.loader import load_config
from nudgeflow.tables import timers as timer_index
from nudgeflow.tables import users as user_table
from nudgeflow.tables.single import SinglePartitionTable as _Store


def test_fire_cost_is_measured_with_every_due_timer_fired(tmp_path: Path) -> None:
    assert fire_cost_ms(2_000, tmp_path, due=1_000) > 0  # raises unless all 1,000 fired
    assert not list(tmp_path.glob("*.rdb"))  # the scratch DB is removed


def test_fire_path_fires_due_users_only_and_moves_their_index_entries(tmp_path: Path) -> None:
    config = configs.write_config(tmp_path, "timers", configs.timers_config())
    engine = build_engine(load_config(config), secret=b"test")
    now = int(time.time() * 1000)
    db = Rdict(str(tmp_path / "db"), Options(raw_mode=True))
    try:
        store = _Store(db)
        table = store
        due = _armed(engine, "due", now - configs.TIMER_DELAY_S * 1000 - 5, now)
        later = _armed(engine, "later", now, now)
        for key, state in ((b"due", due), (b"later", later)):
            timer_index.add(table, key, state.next_deadline())  # type: ignore[arg-type]
            user_table.save(table, key, state)  # type: ignore[arg-type]
        stale = now - 60_000
        timer_index.add(table, b"later", stale)  # type: ignore[arg-type]  # a leftover entry

        assert _fire(engine, store, now) == 1

        entries = [split for split in timer_index._scan(table, 0)]  # type: ignore[arg-type]
        assert entries == [(later.next_deadline(), b"later")]
        fired = user_table.load(table, b"due")  # type: ignore[arg-type]
        assert fired is not None and fired.next_deadline() is None
    finally:
        db.close()
