"""Backtests of hand-written event files through the real config loader and engine."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from nudgeflow.backtest.file import backtest_file
from nudgeflow.config.build import build_engine, engine_secret
from nudgeflow.config.loader import load_config_text
from nudgeflow.engine.core import Engine

T0 = 1_717_372_800_000  # 2024-06-03T00:00:00Z
MIN = 60_000

CONFIG = """
rules:
  - name: abandoned_cart
    trigger: cart_add
    inactivity: 30m
    activity: [product_view, cart_add]
    cancel_on: [purchase]
    when: cart.value > 50
    cooldown: 24h
  - name: post_purchase
    trigger: purchase
    delay: 1d
"""


def engine(text: str = CONFIG) -> Engine:
    return build_engine(load_config_text(text, base_dir=Path(".")), secret=engine_secret())


def ev(user: str, type_: str, minutes: float, **props: Any) -> dict[str, Any]:
    record: dict[str, Any] = {"user_id": user, "type": type_, "ts": T0 + int(minutes * MIN)}
    if props:
        record["properties"] = props
    return record


def write(path: Path, records: list[dict[str, Any] | str]) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))
    return path


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_inactivity_fires_at_its_deadline_when_another_user_moves_the_clock(
    tmp_path: Path,
) -> None:
    events = write(
        tmp_path / "e.jsonl",
        [
            ev("ana", "cart_add", 0, product_id="p1", price=60),
            ev("ana", "product_view", 10, product_id="p2"),  # pushes the deadline to 40m
            ev("ben", "login", 45),  # moves the clock past ana's deadline
        ],
    )
    out = tmp_path / "t.jsonl"
    summary = backtest_file(engine(), events, out=out)
    [trigger] = lines(out)
    assert trigger["rule"] == "abandoned_cart"
    assert trigger["user_id"] == "ana"
    assert trigger["deadline"] == "2024-06-03T00:40:00.000Z"
    assert trigger["fired_at"] == "2024-06-03T00:40:00.000Z"
    assert trigger["late"] is False
    assert trigger["fields"]["cart_value"] == 60
    rule = summary["rules"]["abandoned_cart"]
    assert (rule["armed"], rule["rearmed"], rule["fired"], rule["cancelled"]) == (1, 1, 1, 0)
    assert summary["triggers"] == 1
    assert summary["users"] == 2
    assert summary["events_read"] == 3


def test_purchase_before_the_deadline_cancels_and_arms_the_follow_up(tmp_path: Path) -> None:
    events = write(
        tmp_path / "e.jsonl",
        [
            ev("ana", "cart_add", 0, product_id="p1", price=60),
            ev("ana", "purchase", 20),
            ev("ben", "login", 120),
        ],
    )
    out = tmp_path / "t.jsonl"
    summary = backtest_file(engine(), events, out=out)
    assert lines(out) == []
    assert summary["rules"]["abandoned_cart"]["cancelled"] == 1
    assert summary["rules"]["abandoned_cart"]["fired"] == 0
    assert summary["rules"]["post_purchase"]["armed"] == 1
    assert summary["timers_pending"] == 1  # post_purchase is due a day later


def test_until_fires_the_timers_left_at_the_end(tmp_path: Path) -> None:
    events = write(tmp_path / "e.jsonl", [ev("ana", "purchase", 0)])
    out = tmp_path / "t.jsonl"
    assert backtest_file(engine(), events, out=out)["triggers"] == 0
    summary = backtest_file(engine(), events, out=out, until_ms=T0 + 2 * 1440 * MIN)
    [trigger] = lines(out)
    assert trigger["rule"] == "post_purchase"
    assert trigger["deadline"] == "2024-06-04T00:00:00.000Z"
    assert summary["until"] == "2024-06-05T00:00:00.000Z"
    assert summary["timers_pending"] == 0


def test_condition_false_and_cooldown_are_counted(tmp_path: Path) -> None:
    events = write(
        tmp_path / "e.jsonl",
        [
            ev("ana", "cart_add", 0, product_id="p1", price=60),
            ev("ana", "cart_add", 60, product_id="p2", price=5),  # re-armed after firing
            ev("cy", "cart_add", 60, product_id="p3", price=10),  # 10 <= 50: condition false
            ev("ben", "login", 200),
        ],
    )
    summary = backtest_file(engine(), events)
    rule = summary["rules"]["abandoned_cart"]
    assert rule["fired"] == 1
    assert rule["condition_false"] == 1
    assert rule["suppressed"] == {"cooldown": 1}


def test_bad_lines_are_counted_and_do_not_stop_the_run(tmp_path: Path) -> None:
    events = write(
        tmp_path / "e.jsonl",
        [
            ev("ana", "cart_add", 0, product_id="p1", price=60),
            "{broken",
            {"user_id": "ana", "type": "login"},
            ev("ben", "login", 45),
        ],
    )
    summary = backtest_file(engine(), events)
    assert summary["events_read"] == 2
    assert summary["rejected"] == 2
    assert sum(summary["rejected_by_reason"].values()) == 2
    assert [s["line"] for s in summary["rejected_samples"]] == [2, 3]
    assert summary["triggers"] == 1


def test_out_of_order_and_duplicate_events(tmp_path: Path) -> None:
    events = write(
        tmp_path / "e.jsonl",
        [
            {**ev("ana", "cart_add", 10, product_id="p1", price=60), "event_id": "a1"},
            ev("ben", "login", 20),
            {**ev("ana", "cart_add", 10, product_id="p1", price=60), "event_id": "a1"},
            ev("ana", "product_view", 5),  # older than the clock: no push (not later)
            ev("ben", "login", 41),
        ],
    )
    out = tmp_path / "t.jsonl"
    summary = backtest_file(engine(), events, out=out)
    assert summary["duplicates"] == 1
    assert summary["out_of_order"] == 2
    [trigger] = lines(out)
    assert trigger["deadline"] == "2024-06-03T00:40:00.000Z"
    assert trigger["fields"]["cart_value"] == 60  # the duplicate did not add a second item


@pytest.mark.parametrize("gz", [False, True])
def test_empty_file(tmp_path: Path, gz: bool) -> None:
    path = tmp_path / ("e.jsonl.gz" if gz else "e.jsonl")
    if gz:
        import gzip

        with gzip.open(path, "wb"):
            pass
    else:
        path.write_text("")
    summary = backtest_file(engine(), path)
    assert (summary["events_read"], summary["triggers"], summary["users"]) == (0, 0, 0)
    assert summary["first_event"] is None
