"""What-if against the rules topic (issue 20.4): `--compare live` and `--compare N` read
the version from `<prefix>.rules` on the real broker, as `nudgeflow rules apply` put it."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from nudgeflow.backtest.synthetic import ShopSpec, shop_workload, write_jsonl
from nudgeflow.cli.backtest import command
from nudgeflow.config.loader import DEFAULT_CONFIG
from nudgeflow.config.versions import document_of
from nudgeflow.kafka import ruleset
from tests.fixtures.kafka import unique_name

pytestmark = pytest.mark.kafka

NEW = Path(__file__).resolve().parents[3] / "docs" / "examples" / "whatif_cart_80.yaml"


def publish(bootstrap: str, prefix: str, path: Path, paused: list[str] | None = None) -> int:
    applied = asyncio.run(
        ruleset.apply(bootstrap, prefix, document_of(path), author="test", paused=paused)
    )
    return applied.record.version


def what_if(events: Path, *args: str) -> dict[str, Any]:
    argv = ["--config", str(NEW), "--events", str(events), "--json", *args]
    result = CliRunner().invoke(command, argv, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    out: dict[str, Any] = json.loads(result.output)
    return out


def test_compare_live_and_a_version_number_from_the_rules_topic(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    events = tmp_path / "events.jsonl"
    write_jsonl(events, shop_workload(ShopSpec(users=200, events=3_000, seed=3)))
    prefix = unique_name("whatif")
    broker = ["--broker", kafka_bootstrap, "--topic-prefix", prefix]
    first = publish(kafka_bootstrap, prefix, DEFAULT_CONFIG)  # the default config: version 1
    by_number = what_if(events, "--compare", str(first), *broker)
    assert by_number["old"] == f"version {first} of {prefix}.rules"
    assert by_number["rules"]["abandoned_cart"]["status"] == "changed"
    others = {r["status"] for n, r in by_number["rules"].items() if n != "abandoned_cart"}
    assert others == {"same"}  # templates inline on the topic, rules identical
    # publish NEW itself with welcome_series paused: live differs only by the pause
    publish(kafka_bootstrap, prefix, NEW, paused=["welcome_series"])
    live = what_if(events, "--compare", "live", *broker)
    assert live["old"] == f"version {first + 1} (live) of {prefix}.rules"
    welcome = live["rules"]["welcome_series"]
    assert welcome["status"] == "changed"  # paused on OLD, running on NEW
    assert welcome["old"]["sent"] == 0
    [paused] = welcome["old"]["suppressed"].items()  # every due send, at its due time ...
    sent = welcome["new"]["sent"] + welcome["new"]["suppressed_total"]
    # ... where NEW sent it, or deferred it past quiet hours (some beyond the file's end)
    assert paused[0] == "paused" and 0 < sent <= paused[1] <= sent + welcome["new"]["deferred"]
    assert live["rules"]["abandoned_cart"]["status"] == "same"
    # the first version, read back, is what the file itself gives
    from_file = what_if(events, "--compare", str(DEFAULT_CONFIG))
    assert from_file["rules"] == by_number["rules"]
    assert from_file["changed_users"] == by_number["changed_users"]


def test_a_version_that_is_not_there_is_refused_naming_the_versions(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    events = tmp_path / "events.jsonl"
    write_jsonl(events, shop_workload(ShopSpec(users=10, events=50)))
    prefix = unique_name("whatif")
    publish(kafka_bootstrap, prefix, DEFAULT_CONFIG)
    base = ["--config", str(NEW), "--events", str(events)]
    runner = CliRunner()
    missing = runner.invoke(
        command, [*base, "--compare", "7", "--broker", kafka_bootstrap, "--topic-prefix", prefix]
    )
    assert missing.exit_code == 1
    assert f"no version 7 on {prefix}.rules (versions: 1)" in missing.output
    empty = runner.invoke(
        command, [*base, "--compare", "live", "--broker", kafka_bootstrap, "--topic-prefix",
                  unique_name("none")],
    )  # fmt: skip
    assert empty.exit_code == 1
    assert "holds no version yet" in empty.output
