"""RocksDB memory per table, summed over the open partition DBs, as /metrics shows it."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from rocksdict import Options, Rdict

from nudgeflow.pipeline.probes.rocksdb import KINDS, memory_of


def test_memory_is_summed_per_table_and_kind(tmp_path: Path) -> None:
    dbs = {p: Rdict(str(tmp_path / f"p{p}"), Options(raw_mode=True)) for p in (0, 1)}
    try:
        for p, db in dbs.items():
            for n in range(2_000):
                db[b"user-%d-%d" % (p, n)] = b"x" * 300
        users = SimpleNamespace(name="users", data=SimpleNamespace(_dbs=dbs))
        empty = SimpleNamespace(name="timeline", data=SimpleNamespace(_dbs={}))

        samples = dict(memory_of([users, empty]))

        assert set(samples) == {(t, k) for t in ("users", "timeline") for k in KINDS}
        one = dbs[0].property_int_value(KINDS["memtables"])
        assert one is not None and one > 2_000 * 300  # the writes sit in the memtable
        assert samples[("users", "memtables")] >= 2 * 2_000 * 300  # both partitions
        assert samples[("timeline", "memtables")] == 0.0
    finally:
        for db in dbs.values():
            db.close()
