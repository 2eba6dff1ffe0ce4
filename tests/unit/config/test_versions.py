"""Rules versions (DESIGN §3.3): the record codec, the diff, the conflict rule, pauses."""

from __future__ import annotations

from pathlib import Path

import pytest

from nudgeflow.config.loader import ConfigError
from nudgeflow.config.versions import (
    Conflict,
    RuleVersion,
    check_won,
    decode_version,
    diff,
    document_of,
    encode_version,
    history,
    live_of,
    load_document,
    new_version,
    rule_names,
    settle,
)

DOC = """\
templates:
  hi: "Hi {{ user.name }}"
destinations:
  hook: {url: "${HOOK_URL}"}
rules:
  - name: big_cart
    trigger: cart_add
    inactivity: 30s
    when: "cart.value > 100"
    template: hi
    destinations: [hook]
"""


def _v(doc: str = DOC, live: RuleVersion | None = None, **kw: object) -> RuleVersion:
    return new_version(doc, live=live, author="ana", time="2026-12-03T10:00:00Z", **kw)  # type: ignore[arg-type]


def test_record_round_trips_and_keeps_env_references_unresolved() -> None:
    first = _v(comment="first")
    back = decode_version(encode_version(first))
    assert back == first
    assert (back.version, back.expected, back.comment) == (1, 0, "first")
    assert "${HOOK_URL}" in back.document
    assert back.key == f"1:{first.nonce}".encode()
    second = _v(live=first, paused=["big_cart"])
    assert (second.version, second.expected, second.paused) == (2, 1, ["big_cart"])
    assert second.sha256 != first.sha256  # a pause is a different version


def test_old_style_record_without_optional_fields_decodes() -> None:
    raw = b'{"version":3,"sha256":"x","author":"a","time":"t","document":"rules: []"}'
    record = decode_version(raw)
    assert (record.paused, record.comment, record.expected, record.nonce) == ([], "", 0, "")


def test_lower_offset_wins_a_contested_number_and_the_loser_is_told() -> None:
    one = _v()
    mine, theirs = _v(live=one, comment="mine"), _v(live=one, comment="theirs")
    won = settle([one, theirs, mine])  # theirs reached the topic first
    assert won[2] is theirs and live_of(won) is theirs
    check_won(theirs, won)
    with pytest.raises(Conflict) as caught:
        check_won(mine, won)
    assert caught.value.winner.version == 2
    assert "rebase on version 2" in str(caught.value)


def test_diff_is_a_readable_unified_diff_against_the_live_version() -> None:
    live = _v()
    text = diff(live, DOC.replace("> 100", "> 50"), paused=["big_cart"])
    assert text.startswith("--- version 1\n+++ new\n")
    assert '-    when: "cart.value > 100"\n' in text
    assert '+    when: "cart.value > 50"\n' in text
    assert "+# paused: big_cart\n" in text
    assert diff(live, DOC) == ""
    assert diff(None, DOC).startswith("--- (nothing live)")


def test_load_document_validates_like_the_worker_start_and_marks_pauses() -> None:
    config = load_document(DOC, paused=["big_cart"], env={"HOOK_URL": "https://x.example/h"})
    assert [r.paused for r in config.rules] == [True]
    with pytest.raises(
        ConfigError, match=r"destinations\.hook\.url: environment variable HOOK_URL"
    ):
        load_document(DOC, env={})
    with pytest.raises(ConfigError, match=r"paused: no rule 'nope'"):
        load_document(DOC, paused=["nope"], env={"HOOK_URL": "https://x.example/h"})
    bad = DOC.replace("inactivity: 30s", "inactivity: 30x")
    with pytest.raises(ConfigError, match=r"rules\[big_cart\]\.inactivity"):
        load_document(bad, env={"HOOK_URL": "https://x.example/h"})
    assert rule_names(DOC) == ["big_cart"]


def test_a_templates_directory_is_copied_into_the_document(tmp_path: Path) -> None:
    (tmp_path / "templates").mkdir()
    (tmp_path / "templates" / "cart.txt").write_text("Your cart, {{ user.name }}")
    path = tmp_path / "nudgeflow.yaml"
    path.write_text(DOC.replace("template: hi", "template: cart.txt"))
    document = document_of(path)
    assert "${HOOK_URL}" in document
    config = load_document(document, env={"HOOK_URL": "https://x.example/h"})
    assert config.inline_templates == {
        "cart.txt": "Your cart, {{ user.name }}",
        "hi": "Hi {{ user.name }}",
    }
    plain = tmp_path / "plain" / "nudgeflow.yaml"
    plain.parent.mkdir()
    plain.write_text(DOC)
    assert document_of(plain) == DOC  # no directory: the text as written


def test_history_lists_every_version_newest_first_with_its_diff() -> None:
    first = new_version(DOC, live=None, author="ana", time="2026-01-01T00:00:00Z", comment="start")
    second = new_version(DOC, live=first, author="http", time="2026-01-02T00:00:00Z", paused=["r"])
    past = history(settle([first, second]))
    assert [v["version"] for v in past] == [2, 1]
    assert (past[1]["author"], past[1]["comment"], past[1]["sha256"]) == (
        "ana",
        "start",
        first.sha256,
    )
    assert past[1]["diff"] == diff(None, DOC)
    assert past[0]["paused"] == ["r"]
    assert past[0]["diff"].startswith("--- version 1\n") and "+# paused: r\n" in past[0]["diff"]
    assert history({}) == []
