"""RocksDB options for every Faust table: one place, so a worker's memory has one bound.

Faust opens one RocksDB per table per partition (users, timeline, delivered:
3 x 4 partitions by default) and gives each Faust's defaults
(`faust/stores/rocksdb.py`): 64 MB write buffers x 3 and its own 2 GB block
cache. Those are ceilings, not allocations, but they are what a long-running
worker grows towards: memtables fill with every write, and the block cache
keeps every block read until it reaches 2 GB. Twelve such DBs can reach ~26 GB;
the bound below is ~0.11 GB for all twelve (see `ceiling_mb`).

Faust builds a new `rocksdict.Cache` for each DB it opens (`RocksDBOptions.as_options`)
and passes unknown keys to python-rocksdb only, so a block cache shared by all
DBs is out of reach through `options=`; hence small per-DB caches, sized per table.

A fresh dict per call: Faust's store pops keys from the `options` it is given.
"""

from __future__ import annotations

from typing import Any

MB = 1024 * 1024

# Memtable size, users table. Writes land here first and go to an SST file when full;
# 8 MB still takes ~25,000 user states per flush (states are ~300 bytes), so flushes
# stay rare at the worker's write rate, and restoring 1M users from the changelog writes
# ~40 SST files per partition instead of ~5. Faust's default: 64 MB.
WRITE_BUFFER_SIZE = 8 * MB

# Memtables per DB: one being written while one is flushed. A third only helps when
# flushes fall behind a write burst, which a ~1,000 writes/s worker does not make.
# Faust's default: 3.
MAX_WRITE_BUFFER_NUMBER = 2

# Target SST file size. Smaller files compact in smaller steps (less transient
# memory and I/O per compaction) at the cost of more open files. Faust's default: 64 MB.
TARGET_FILE_SIZE_BASE = 32 * MB

# Uncompressed data blocks kept in memory. The users table is the hot one: every event
# reads its user's state and every timer tick scans the front of the index, so it gets
# the larger cache; a miss is a read from the OS page cache plus decompression (tens of
# µs), so a cache smaller than the data costs little. Faust's default: 2 GB per DB.
# 4 MB, not more: a cache fills with the blocks of every SST file compaction rewrites, not
# only with the working set, so it reaches its bound however small the data. In the
# 10-minute soak over 100,000 users, 32 MB per partition kept filling to the end (RSS +100
# MB after warm-up); 8 MB filled for 7.5 minutes (11.8 -> 31.9 MB for four partitions,
# reliability.md). The hot front of the index and the recently active users fit in 4 MB.
USERS_BLOCK_CACHE_SIZE = 4 * MB

# The timeline (delivery attempts) and `delivered` (webhook dedupe) tables take a few
# hundred bytes per webhook: at 60 webhooks/s an 8 MB memtable per partition took ~45
# minutes to fill, so their memtables grew through the whole 10-minute soak (RocksDB's
# memory between flushes rose 20 -> 54 MB, reliability.md). 1 MB bounds that at 8 MB for
# all eight DBs. Their reads are a `delivered` lookup per trigger, which the bloom filter
# answers for new ids, so a small cache loses little.
SMALL_WRITE_BUFFER_SIZE = 1 * MB
SMALL_BLOCK_CACHE_SIZE = 2 * MB

# Bloom filter bits per key: 10 gives ~1% false positives (Faust's 3: ~14%). Every
# first event of a new user, and every new trigger id in `delivered`, looks up a key that
# is not there; the filter answers without reading a block. Costs 1.25 bytes per key in
# memory (1.25 MB per million users).
BLOOM_FILTER_BITS = 10

# Note: `block_cache_compressed_size` is not set: Faust ignores it with rocksdict.


def _options(block_cache_size: int, write_buffer_size: int) -> dict[str, Any]:
    return {
        "write_buffer_size": write_buffer_size,
        "max_write_buffer_number": MAX_WRITE_BUFFER_NUMBER,
        "target_file_size_base": TARGET_FILE_SIZE_BASE,
        "block_cache_size": block_cache_size,
        "bloom_filter_size": BLOOM_FILTER_BITS,
    }


def users() -> dict[str, Any]:
    """For the user state table (tables/users.py): state and timer index."""
    return _options(USERS_BLOCK_CACHE_SIZE, WRITE_BUFFER_SIZE)


def small() -> dict[str, Any]:
    """For the per-user timeline and the deliver agent's `delivered` table."""
    return _options(SMALL_BLOCK_CACHE_SIZE, SMALL_WRITE_BUFFER_SIZE)


def ceiling_mb(options: dict[str, Any], partitions: int) -> float:
    """Upper bound of one table's RocksDB memory: memtables + block cache, per partition.

    (Index and filter blocks, ~2 bytes per key with these options, come on top.)
    """
    per_db = (
        options["write_buffer_size"] * options["max_write_buffer_number"]
        + options["block_cache_size"]
    )
    return per_db * partitions / MB
