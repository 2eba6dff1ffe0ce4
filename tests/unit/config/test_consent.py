"""The `consent:` and `dedupe:` sections and each destination's category (issue 19.1, 19.6):
defaults, compilation, and a bad value failing the load with the field named."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from nudgeflow.config.loader import (
    DEFAULT_CONFIG,
    DEV_CONFIG,
    ConfigError,
    load_config,
    load_config_text,
)
from nudgeflow.engine.consent import MARKETING, TRANSACTIONAL
from nudgeflow.engine.dedupe import Dedupe


def load(text: str):
    return load_config_text(textwrap.dedent(text), base_dir=Path("/nonexistent"), env={})


def test_the_shipped_configs_turn_consent_on_and_keep_1000_ids_for_7_days() -> None:
    for path in (DEFAULT_CONFIG, DEV_CONFIG):
        config = load_config(path)
        consent = config.limits.consent
        assert consent is not None
        assert consent.unsubscribe_events == {"unsubscribe"}
        assert consent.subscribe_events == {"subscribe"} and consent.trait == "subscribed"
        assert consent.category("demo") == MARKETING
        assert config.dedupe == Dedupe(ids=1000, within_ms=7 * 86_400_000)


def test_no_section_no_consent_and_the_default_dedupe() -> None:
    config = load("rules: []")
    assert config.limits.consent is None
    assert config.dedupe.ids >= 1000 and config.dedupe.within_ms == 7 * 86_400_000


def test_sections_compile_with_categories() -> None:
    config = load(
        """
        consent: {unsubscribe_events: [opt_out, unsubscribe], subscribe_events: opt_in, trait: null}
        dedupe: {ids: 5000, within: 30d}
        destinations:
          crm: {url: "https://crm.example.com/h"}
          receipts: {url: "https://r.example.com/h", category: transactional}
        """
    )
    consent = config.limits.consent
    assert consent is not None
    assert consent.unsubscribe_events == {"opt_out", "unsubscribe"}
    assert consent.subscribe_events == {"opt_in"} and consent.trait is None
    assert (consent.category("crm"), consent.category("receipts")) == (MARKETING, TRANSACTIONAL)
    assert consent.exempt(["receipts"]) and not consent.exempt(["receipts", "crm"])
    assert not consent.exempt([])  # the trigger record alone is marketing
    assert config.dedupe == Dedupe(ids=5000, within_ms=30 * 86_400_000)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("consent: {unsubscribe_event: [x]}", "consent.unsubscribe_event: unknown key"),
        ("consent: {unsubscribe_events: ['']}", "consent.unsubscribe_events[0]: event type"),
        ("consent: {trait: 'no spaces'}", "consent.trait: String should match pattern"),
        (
            "consent: {unsubscribe_events: [stop], subscribe_events: [stop]}",
            "consent.subscribe_events: stop both unsubscribes and subscribes",
        ),
        ("dedupe: {ids: 0}", "dedupe.ids: Input should be greater than or equal to 1"),
        ("dedupe: {ids: 1000000}", "dedupe.ids: Input should be less than or equal to 100000"),
        ("dedupe: {within: 7x}", "dedupe.within: invalid duration '7x'"),
        ("dedupe: {within: 0s}", "dedupe.within: duration '0s' must be greater than zero"),
        (
            "destinations: {d: {url: 'https://d.example.com', category: 'a b'}}",
            "destinations.d.category: String should match pattern",
        ),
    ],
)
def test_a_bad_value_fails_the_load_naming_the_field(text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        load(text)
    assert expected in str(info.value)
