"""Nudgeflow: real-time behavioral triggers on Faust, Kafka and RocksDB."""

__version__ = "0.1.0"
