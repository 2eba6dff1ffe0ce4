"""The tables' RocksDB options are ones Faust accepts, and they bound a worker's memory."""

from __future__ import annotations

from pathlib import Path

from faust.stores import rocksdb as faust_rocksdb

from nudgeflow.tables import options

MB = 1024 * 1024


def test_faust_reads_every_option_and_opens_a_db_with_them(tmp_path: Path) -> None:
    for chosen in (options.users(), options.small()):
        rocks = faust_rocksdb.RocksDBOptions(**chosen, use_rocksdict=True)

        assert rocks.extra_options == {}  # no key Faust would silently ignore
        for name, value in chosen.items():
            assert getattr(rocks, name) == value
        db = rocks.open(tmp_path / f"db-{chosen['block_cache_size']}")
        db[b"k"] = b"v"
        assert db[b"k"] == b"v"
        db.close()


def test_each_call_gives_a_fresh_dict_because_faust_pops_keys_from_it() -> None:
    first = options.users()
    first.clear()
    assert options.users()["write_buffer_size"] == options.WRITE_BUFFER_SIZE


def test_three_tables_of_four_partitions_stay_far_below_fausts_defaults() -> None:
    ours = options.ceiling_mb(options.users(), 4) + 2 * options.ceiling_mb(options.small(), 4)
    defaults = {
        "write_buffer_size": faust_rocksdb.DEFAULT_WRITE_BUFFER_SIZE,
        "max_write_buffer_number": faust_rocksdb.DEFAULT_MAX_WRITE_BUFFER_NUMBER,
        "block_cache_size": faust_rocksdb.DEFAULT_BLOCK_CACHE_SIZE,
    }

    assert ours == 4 * (16 + 4) + 8 * (2 + 2)  # 112 MB
    assert options.ceiling_mb(defaults, 12) > 25_000
