from datetime import UTC, datetime

from click.testing import CliRunner

from nudgeflow.cli.dlq import DeadLetter, command, parse_since, replay_headers, select
from nudgeflow.delivery.records import REPLAY_HEADER, dlq_headers


def letter(rule: str, dead_at_ms: int, reason: str = "retries_exhausted") -> DeadLetter:
    headers = dlq_headers(
        destination="zapier",
        rule=rule,
        reason=reason,
        last_status="503",
        attempts=4,
        first_attempt_at_ms=0,
        dead_at_ms=dead_at_ms,
    )
    return DeadLetter(b"ana", b"{}", headers, timestamp_ms=dead_at_ms)


def test_select_by_rule_and_since() -> None:
    letters = [
        letter("a", 1000),
        letter("b", 2000),
        letter("a", 3000),
        letter("a", 4000, reason="bad_record"),
    ]
    assert [d.dead_at_ms for d in select(letters, "a", None)] == [1000, 3000]
    assert [d.dead_at_ms for d in select(letters, None, 2000)] == [2000, 3000]
    assert select(letters, "c", None) == []


def test_parse_since_duration_and_iso() -> None:
    now = datetime(2026, 1, 1, 12, tzinfo=UTC)
    assert parse_since("2h", now) == int(datetime(2026, 1, 1, 10, tzinfo=UTC).timestamp() * 1000)
    assert parse_since("2026-01-01T11:00:00Z", now) == int(
        datetime(2026, 1, 1, 11, tzinfo=UTC).timestamp() * 1000
    )


def test_replay_marks_and_keeps_destination() -> None:
    headers = dict(replay_headers(letter("a", 1).headers))
    assert headers[REPLAY_HEADER] == b"1"
    assert headers["nudgeflow-destination"] == b"zapier"


def test_cli_help_lists_options() -> None:
    out = CliRunner().invoke(command, ["replay", "--help"])
    assert out.exit_code == 0
    assert "--rule" in out.output and "--since" in out.output and "--broker" in out.output
