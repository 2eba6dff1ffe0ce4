"""Basics every floor may use: Prometheus metric definitions, structured logs, the clock."""
