"""Shared fixtures live in tests/fixtures/, one module per kind of real part."""

pytest_plugins = [
    "tests.fixtures.kafka",
    "tests.fixtures.workers",
    "tests.fixtures.receivers",
]
