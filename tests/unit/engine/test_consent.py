"""Consent (issue 19.1, DESIGN §3.2): subscription state and the per-send check."""

from __future__ import annotations

import json
from pathlib import Path

import msgspec

from nudgeflow.backtest.file import backtest_file
from nudgeflow.config.build import build_engine
from nudgeflow.config.loader import DEFAULT_CONFIG, load_config
from nudgeflow.engine import consent
from nudgeflow.engine.consent import ALL, Consent
from nudgeflow.engine.state import Sub, decode_state, encode_state, new_state
from tests.unit.engine.helpers import T0, H, M, Run, ev, iso, make_engine

CONFIG = """
consent:
  unsubscribe_events: [unsubscribe]
  subscribe_events: [subscribe]
  trait: subscribed
destinations:
  crm: {url: "https://crm.example.com/hook"}
  receipts: {url: "https://receipts.example.com/hook", category: transactional}
  news: {url: "https://news.example.com/hook", category: newsletter}
rules:
  - name: promo
    trigger: cart_add
    delay: 10m
    destinations: [crm]
  - name: receipt
    trigger: purchase
    delay: 0s
    destinations: [receipts]
  - name: both
    trigger: signup
    delay: 0s
    destinations: [crm, receipts]
  - name: digest
    trigger: login
    delay: 0s
    destinations: [news]
"""


def test_a_marketing_send_to_an_unsubscribed_user_is_suppressed_consent() -> None:
    run = Run(make_engine(CONFIG)).send(
        ev("unsubscribe", T0, "u1"), ev("cart_add", T0 + H, "c1"), ev("login", T0 + H + 1)
    )
    run.tick(T0 + 2 * H)
    assert run.triggers() == []
    suppressed = run.decisions("suppressed")
    assert {(d.rule, d.reason) for d in suppressed} == {("promo", "consent"), ("digest", "consent")}


def test_a_transactional_destination_still_receives() -> None:
    run = Run(make_engine(CONFIG)).send(
        ev("unsubscribe", T0, "u1"), ev("purchase", T0 + H), ev("signup", T0 + H + 1)
    )
    by_rule = {t.rule: t.destinations for t in run.triggers()}
    assert by_rule == {"receipt": ["receipts"], "both": ["receipts"]}  # crm dropped from `both`


def test_subscribe_again_and_the_trait_both_change_it() -> None:
    run = Run(make_engine(CONFIG)).send(
        ev("unsubscribe", T0),
        ev("subscribe", T0 + M),
        ev("cart_add", T0 + 2 * M),
        ev("identify", T0 + 20 * M, traits={"subscribed": False}),
        ev("cart_add", T0 + 30 * M),
    )
    run.tick(T0 + H)
    assert [t.deadline for t in run.triggers("promo")] == [iso(T0 + 12 * M)]
    assert [d.reason for d in run.decisions("suppressed")] == ["consent"]


def test_a_category_unsubscribe_blocks_that_category_only() -> None:
    run = Run(make_engine(CONFIG)).send(
        ev("unsubscribe", T0, category="newsletter"), ev("login", T0 + M), ev("cart_add", T0 + M)
    )
    run.tick(T0 + H)
    assert [t.rule for t in run.triggers()] == ["promo"]
    assert [(d.rule, d.reason) for d in run.decisions("suppressed")] == [("digest", "consent")]


def test_the_latest_choice_wins_between_all_and_a_category() -> None:
    engine = make_engine(CONFIG)
    c = engine.limits.consent
    assert c is not None
    s = new_state("u")
    c.observe(s, "unsubscribe", {}, None, T0)
    c.observe(s, "subscribe", {"category": "newsletter"}, None, T0 + M)
    assert consent.subscribed(s.consent, "newsletter") and not consent.subscribed(s.consent, "x")
    c.observe(s, "unsubscribe", {}, None, T0 + 2 * M)  # a later global opt-out wins again
    assert not consent.subscribed(s.consent, "newsletter")
    c.observe(s, "subscribe", {}, None, T0 + 3 * M)
    assert consent.subscribed(s.consent, "newsletter") and consent.subscribed(s.consent, "x")


def test_an_older_choice_arriving_late_does_not_flip_a_newer_one() -> None:
    c = Consent(frozenset({"unsubscribe"}), frozenset({"subscribe"}))
    s = new_state("u")
    c.observe(s, "unsubscribe", {}, None, T0 + H)
    c.observe(s, "subscribe", {}, None, T0)  # sent earlier, arrived later
    assert s.consent == {ALL: Sub(False, T0 + H)}


def test_a_repeated_choice_keeps_the_time_it_changed() -> None:
    c = Consent(frozenset({"unsubscribe"}), frozenset({"subscribe"}), trait="subscribed")
    s = new_state("u")
    c.observe(s, "identify", {}, {"subscribed": True}, T0)  # the default: nothing stored
    assert s.consent is None
    c.observe(s, "unsubscribe", {}, None, T0 + M)
    c.observe(s, "identify", {}, {"subscribed": False}, T0 + H)
    assert consent.view(s) == {
        "subscribed": False,
        "changed_at": iso(T0 + M),
        "categories": {},
    }


def test_a_state_written_before_consent_decodes_subscribed() -> None:
    old = msgspec.msgpack.encode({"u": "ana", "p": {"name": "Ana"}})
    state = decode_state(old)
    assert state.consent is None and consent.view(state)["subscribed"] is True
    state.consent = {ALL: Sub(False, T0)}
    assert decode_state(encode_state(state)).consent == {ALL: Sub(False, T0)}


def test_no_consent_section_no_check() -> None:
    run = Run(make_engine(CONFIG.split("trait: subscribed\n")[1])).send(
        ev("unsubscribe", T0), ev("login", T0 + 1)
    )
    assert [t.rule for t in run.triggers()] == ["digest"]


def _jsonl(path: Path, records: list[dict[str, object]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_the_issue_scenario_unsubscribed_at_9_no_abandoned_cart_at_10(tmp_path: Path) -> None:
    """Issue 19's opening: the default config and `nudgeflow backtest`; an unsubscribe at
    09:00, a $120 cart_add at 10:00 -> abandoned_cart does not fire (suppressed_consent)."""
    day = "2024-06-04T"
    events = _jsonl(
        tmp_path / "events.jsonl",
        [
            {"user_id": "ana", "type": "unsubscribe", "ts": f"{day}09:00:00Z", "event_id": "e1"},
            {
                "user_id": "ana",
                "type": "cart_add",
                "ts": f"{day}10:00:00Z",
                "event_id": "e2",
                "properties": {"product_id": "p1", "price": 120, "product_name": "Boots"},
            },
            {"user_id": "bob", "type": "page_view", "ts": f"{day}23:59:00Z"},  # moves the clock
        ],
    )
    decisions = tmp_path / "decisions.jsonl"
    engine = build_engine(load_config(DEFAULT_CONFIG), secret=b"test")
    summary = backtest_file(engine, events, decisions=decisions)
    assert summary["triggers"] == 0
    cart = summary["rules"]["abandoned_cart"]
    assert cart["fired"] == 0 and cart["suppressed"] == {"consent": 1}
    audit = [json.loads(line) for line in decisions.read_text().splitlines()]
    [suppressed] = [d for d in audit if d["rule"] == "abandoned_cart" and d["outcome"] != "armed"]
    assert (suppressed["outcome"], suppressed["reason"]) == ("suppressed", "consent")
    # at its deadline (the fast variant idles 15 minutes, the others 30), not deferred
    assert suppressed["at"] in (f"{day}10:15:00.000Z", f"{day}10:30:00.000Z")
