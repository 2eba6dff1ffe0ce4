"""What-if (issue 20.4): one history under OLD and NEW, per-rule figures and changed users."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nudgeflow.backtest.compare import compare_file, describe, render_compare_text
from nudgeflow.config.build import build_engine, engine_secret
from nudgeflow.config.loader import load_config_text
from nudgeflow.engine.core import Engine
from tests.unit.backtest.test_runner import ev, write

OLD = """
rules:
  - name: abandoned_cart
    trigger: cart_add
    inactivity: 30m
    activity: [product_view, cart_add]
    cancel_on: [logout]
    when: cart.value > 50
    cooldown: 24h
  - name: goodbye
    trigger: logout
    delay: 0s
  - name: post_purchase
    trigger: purchase
    delay: 1d
"""
# the threshold goes from 50 to 100; goodbye is removed; welcome is added
NEW = (
    OLD.replace("cart.value > 50", "cart.value > 100").replace(
        "  - name: goodbye\n    trigger: logout\n    delay: 0s\n", ""
    )
    + """  - name: welcome
    trigger: signup
    delay: 0s
"""
)


def engine(text: str) -> Engine:
    return build_engine(load_config_text(text, base_dir=Path(".")), secret=engine_secret())


def history(tmp_path: Path) -> Path:
    return write(
        tmp_path / "events.jsonl",
        [
            ev("ana", "cart_add", 0, product_id="p1", price=60),  # 60: only OLD reminds her
            ev("ben", "cart_add", 1, product_id="p2", price=150),  # 150: both remind him
            ev("cy", "cart_add", 2, product_id="p3", price=80),  # 80: only OLD
            ev("dee", "cart_add", 3, product_id="p4", price=30),  # 30: neither
            ev("eve", "logout", 4),  # goodbye: OLD only (removed in NEW)
            ev("fay", "signup", 5),  # welcome: NEW only (added)
            ev("gus", "cart_add", 6, product_id="p5", price=70),  # OLD: sent, then cooldown
            ev("ana", "purchase", 60, revenue=60.0),  # converts OLD's reminder to ana
            ev("ben", "purchase", 61, revenue=150.0),  # converts both sides' reminder
            ev("gus", "cart_add", 100, product_id="p6", price=10),  # 80 at 130m: in cooldown
            ev("dee", "login", 200),  # moves the clock past every deadline
        ],
    )


def run(tmp_path: Path) -> dict[str, Any]:
    return compare_file(engine(NEW), engine(OLD), history(tmp_path), labels=("new.yaml", "old"))


def test_a_threshold_change_names_the_users_it_flips_and_counts_each_rule(
    tmp_path: Path,
) -> None:
    result = run(tmp_path)
    assert (result["events_read"], result["users"], result["new"], result["old"]) == (
        11, 7, "new.yaml", "old",
    )  # fmt: skip
    cart = result["rules"]["abandoned_cart"]
    assert cart["status"] == "changed"
    assert (cart["old"]["sent"], cart["new"]["sent"]) == (4, 1)  # ana, ben, cy, gus vs ben
    assert cart["old"]["suppressed"] == {"cooldown": 1}  # gus's second cart
    assert cart["new"]["suppressed"] == {}
    assert (cart["old"]["converted"], cart["new"]["converted"]) == (2, 1)
    assert (cart["old"]["revenue"], cart["new"]["revenue"]) == (210.0, 150.0)
    assert cart["diff"] == {
        "fired": -3, "sent": -3, "suppressed_total": -1, "converted": -1,
        "revenue": -60.0, "cancelled": 0, "suppressed": {"cooldown": -1},
    }  # fmt: skip
    post = result["rules"]["post_purchase"]
    assert post["status"] == "same"
    assert (post["old"]["sent"], post["new"]["sent"], post["diff"]["sent"]) == (0, 0, 0)
    assert result["triggers"] == {"old": 5, "new": 2}


def test_removed_and_added_rules_show_as_such(tmp_path: Path) -> None:
    rules = run(tmp_path)["rules"]
    assert list(rules) == ["abandoned_cart", "goodbye", "post_purchase", "welcome"]
    goodbye, welcome = rules["goodbye"], rules["welcome"]
    assert (goodbye["status"], goodbye["new"], goodbye["old"]["sent"]) == ("removed", None, 1)
    assert goodbye["diff"]["sent"] == -1
    assert (welcome["status"], welcome["old"], welcome["new"]["sent"]) == ("added", None, 1)
    assert welcome["diff"]["sent"] == 1


def test_changed_users_say_what_old_and_new_did_and_no_one_else_is_listed(
    tmp_path: Path,
) -> None:
    result = run(tmp_path)
    assert result["users_changed"] == 5  # not ben (same on both sides), not dee (neither)
    assert result["changed_users"] == [
        {
            "user_id": "ana",
            "old": {"abandoned_cart": {"sent": 1, "converted": 1, "revenue": 60.0}},
            "new": {"abandoned_cart": {}},
        },
        {"user_id": "cy", "old": {"abandoned_cart": {"sent": 1}}, "new": {"abandoned_cart": {}}},
        {"user_id": "eve", "old": {"goodbye": {"sent": 1}}, "new": {"goodbye": {}}},
        {"user_id": "fay", "old": {"welcome": {}}, "new": {"welcome": {"sent": 1}}},
        {
            "user_id": "gus",
            "old": {"abandoned_cart": {"sent": 1, "suppressed cooldown": 1}},
            "new": {"abandoned_cart": {}},
        },
    ]


def test_the_same_config_on_both_sides_changes_nothing(tmp_path: Path) -> None:
    result = compare_file(engine(OLD), engine(OLD), history(tmp_path))
    lines = render_compare_text(result).splitlines()
    assert "  abandoned_cart       cooldown 1 -> 1" in lines  # shown, unsigned: it did not move
    assert "users whose outcome changed: 0 of 7" in lines
    assert result["users_changed"] == 0
    assert result["changed_users"] == []
    assert {row["status"] for row in result["rules"].values()} == {"same"}
    for row in result["rules"].values():
        assert row["old"] == row["new"]
        moved = row["diff"].pop("suppressed")
        assert set(row["diff"].values()) == {0}
        assert set(moved.values()) <= {0}  # a reason on both sides moved by 0


def test_the_text_report_shows_rows_reasons_and_users(tmp_path: Path) -> None:
    text = render_compare_text(run(tmp_path))
    rows = {line.split()[0]: line.split()[1:] for line in text.splitlines() if line[:1].isalpha()}
    assert rows["abandoned_cart"][:4] == ["changed", "4", "1", "-3"]
    assert rows["goodbye"][:4] == ["removed", "1", "-", "-1"]
    assert rows["welcome"][:4] == ["added", "-", "1", "+1"]
    assert "  abandoned_cart       cooldown 1 -> 0 (-1)" in text
    assert "users whose outcome changed: 5 of 7" in text
    [ana] = [line for line in text.splitlines() if line.strip().startswith("ana ")]
    assert ana.split(None, 2)[2].split() == ["sent", "1,", "converted", "1", "(60.00)", "nothing"]
    [gus] = [line for line in text.splitlines() if line.strip().startswith("gus ")]
    assert "sent 1, suppressed cooldown 1" in gus


def test_describe_orders_sends_suppressions_and_conversions() -> None:
    assert describe({}) == "nothing"
    assert describe({"suppressed cap": 2, "control": 1}) == "control 1, suppressed cap 2"
    assert describe({"converted": 1, "sent": 2}) == "sent 2, converted 1"
    assert describe({"sent": 1, "converted": 2, "revenue": 1234.5}) == (
        "sent 1, converted 2 (1,234.50)"
    )
