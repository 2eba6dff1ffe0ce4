"""`nudgeflow backtest --config NEW --compare OLD` end to end, on files (issue 20.4)."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from nudgeflow.backtest.synthetic import ShopSpec, shop_workload, write_jsonl
from nudgeflow.cli.backtest import command
from nudgeflow.config.loader import DEFAULT_CONFIG

# the README's what-if: the default config with abandoned_cart's cart total at 80, not 50
NEW = Path(__file__).resolve().parents[2] / "docs" / "examples" / "whatif_cart_80.yaml"


def shop_file(tmp_path: Path) -> Path:
    events = tmp_path / "events.jsonl.gz"
    write_jsonl(events, shop_workload(ShopSpec(users=300, events=6_000, seed=7)))
    return events


def test_the_readme_threshold_change_on_a_generated_shop(tmp_path: Path) -> None:
    events = shop_file(tmp_path)
    args = ["--config", str(NEW), "--compare", str(DEFAULT_CONFIG), "--events", str(events)]
    result = CliRunner().invoke(command, [*args, "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    cart = summary["rules"]["abandoned_cart"]
    assert cart["status"] == "changed"
    assert cart["new"]["sent"] < cart["old"]["sent"]  # a higher threshold: fewer reminders
    assert cart["diff"]["sent"] == cart["new"]["sent"] - cart["old"]["sent"]
    assert {r["status"] for n, r in summary["rules"].items() if n != "abandoned_cart"} == {"same"}
    assert summary["events_read"] == 6_000
    assert 0 < summary["users_changed"] <= summary["users"]
    shown = summary["changed_users"]
    assert len(shown) == min(20, summary["users_changed"])
    for user in shown:  # each listed rule did something different on the two sides
        assert user["old"].keys() == user["new"].keys()
        assert all(user["old"][r] != user["new"][r] for r in user["old"])
    # the same comparison as text: the row, and every listed user by id
    text = CliRunner().invoke(command, args, catch_exceptions=False).output
    row = next(line.split()[1:] for line in text.splitlines() if line.startswith("abandoned_"))
    assert row[:4] == ["changed", f"{cart['old']['sent']:,}", f"{cart['new']['sent']:,}",
                       f"{cart['diff']['sent']:+,}"]  # fmt: skip
    assert f"users whose outcome changed: {summary['users_changed']:,} of" in text
    assert all(f"  {user['user_id']} " in text for user in shown)


def test_compare_refuses_what_it_cannot_do(tmp_path: Path) -> None:
    events = shop_file(tmp_path)
    base = ["--config", str(NEW), "--events", str(events)]
    runner = CliRunner()
    out = runner.invoke(command, [*base, "--compare", str(DEFAULT_CONFIG), "--out", "t.jsonl"])
    assert out.exit_code == 2
    refused = "--out, --decisions, --conversions and --workers do not go with --compare"
    assert refused in out.output
    two = runner.invoke(command, [*base, "--compare", str(DEFAULT_CONFIG), "--workers", "2"])
    assert two.exit_code == 2 and refused in two.output
    missing = runner.invoke(command, [*base, "--compare", str(tmp_path / "nope.yaml")])
    assert missing.exit_code == 2
    assert "is neither a config file nor 'live' or a version number" in missing.output
    bad = tmp_path / "bad.yaml"
    bad.write_text("rules:\n  - name: r\n    trigger: cart_add\n    delay: 3x\n")
    broken = runner.invoke(command, [*base, "--compare", str(bad)])
    assert broken.exit_code == 1
    assert "rules[r].delay" in broken.output
    for version in ("live", "3"):  # a version lives on the rules topic: a broker is needed
        no_broker = runner.invoke(command, [*base, "--compare", version])
        assert no_broker.exit_code == 2
        assert f"--compare {version}: reading a version needs --broker" in no_broker.output
