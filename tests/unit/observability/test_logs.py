"""Structured log lines: fields, both formats, redaction, the dictConfig Faust is handed."""

from __future__ import annotations

import io
import json
import logging
import logging.config
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr

from nudgeflow.config.loader import load_config_text
from nudgeflow.config.settings import WorkerSettings
from nudgeflow.delivery.dispatch import Step, log_delivery_failure
from nudgeflow.delivery.retry import AttemptResult, Outcome
from nudgeflow.engine.actions import Decision
from nudgeflow.observability import logs
from tests import factories

SECRET = "whsec_c2VjcmV0LXZhbHVlLWZvci10ZXN0cw=="


def _record(msg: str = "hello %s", args: tuple = ("world",), **extra: object) -> logging.LogRecord:
    record = logging.LogRecord("nudgeflow.test", logging.WARNING, __file__, 1, msg, args, None)
    record.__dict__.update(extra)
    return record


def test_json_lines_carry_the_message_and_the_extra_fields() -> None:
    line = logs.StructuredFormatter("json").format(_record(rule="r1", attempt=2, gone=None))
    fields = json.loads(line)
    assert fields["level"] == "warning" and fields["logger"] == "nudgeflow.test"
    assert fields["msg"] == "hello world"
    assert (fields["rule"], fields["attempt"]) == ("r1", 2)
    assert "gone" not in fields and "args" not in fields and "pathname" not in fields
    assert fields["ts"].endswith("Z")


def test_text_lines_are_key_value_with_quoting() -> None:
    line = logs.StructuredFormatter("text").format(
        _record("two words", (), rule="r1", ok=True, note='say "hi"')
    )
    assert ' level=warning logger=nudgeflow.test msg="two words" rule=r1 ok=true ' in line
    assert line.endswith('note="say \\"hi\\""')
    assert "\n" not in logs.StructuredFormatter("text").format(_record("a\nb", ()))


def test_secrets_are_redacted_in_messages_fields_and_tracebacks() -> None:
    fmt = logs.StructuredFormatter("json", secrets=[SECRET, "short"])
    try:
        raise ValueError(f"bad key {SECRET}")
    except ValueError:
        import sys

        record = _record("header %s", (SECRET,), header=SECRET)
        record.exc_info = sys.exc_info()
    line = fmt.format(record)
    assert SECRET not in line
    fields = json.loads(line)
    assert fields["msg"] == "header [redacted]" and fields["header"] == "[redacted]"
    assert "bad key [redacted]" in fields["exc"]
    # Too short to be a secret: not redacted (it would blank ordinary words).
    assert "short" in logs.StructuredFormatter("text", secrets=["short"]).format(
        _record("short", ())
    )


def test_unknown_format_is_refused() -> None:
    with pytest.raises(ValueError, match="log format 'xml'"):
        logs.StructuredFormatter("xml")


def test_secrets_of_collects_every_configured_secret(tmp_path: Path) -> None:
    text = """
destinations:
  crm:
    url: https://hooks.example.com/x
    secret: ${DEST_SECRET}
    old_secrets: [whsec_b2xkLXNlY3JldA==]
    headers: {Authorization: "Bearer ${HDR_TOKEN}"}
rules:
  - {name: ping, trigger: ping}
"""
    config = load_config_text(
        text, base_dir=tmp_path, env={"DEST_SECRET": SECRET, "HDR_TOKEN": "hdr-token-123"}
    )
    settings = WorkerSettings(api_token=SecretStr("api-token-456"), segment_write_keys=["wk-789"])
    found = logs.secrets_of(config, settings, env={"NUDGEFLOW_SECRET": "engine-secret-0"})
    assert set(found) == {
        SECRET,
        SECRET.removeprefix("whsec_"),
        "whsec_b2xkLXNlY3JldA==",
        "b2xkLXNlY3JldA==",
        "Bearer hdr-token-123",
        "api-token-456",
        "wk-789",
        "engine-secret-0",
    }


@pytest.fixture
def configured() -> Iterator[io.StringIO]:
    """Apply logs.logging_config as mode would, capturing the root handler's stream.

    dictConfig is process-wide: it creates and re-levels the pinned loggers and strips the
    handlers of their children (mode's NullHandlers, ...). Every logger is put back afterwards
    (the ones it created to a new logger's defaults), so no later test in this process runs
    under this configuration.
    """
    loggers = [logging.root] + [
        lg for lg in logging.Logger.manager.loggerDict.values() if isinstance(lg, logging.Logger)
    ]
    saved = [(lg, lg.level, lg.handlers[:], lg.propagate, lg.disabled) for lg in loggers]
    logging.config.dictConfig(logs.logging_config("debug", "json", secrets=[SECRET]))
    stream = io.StringIO()
    handler = logging.root.handlers[0]
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(stream)
    yield stream
    known = {id(lg) for lg in loggers}
    created = [
        (lg, logging.NOTSET, [], True, False)  # a new logger's defaults
        for lg in logging.Logger.manager.loggerDict.values()
        if isinstance(lg, logging.Logger) and id(lg) not in known
    ]
    for lg, level, handlers, propagate, disabled in saved + created:
        lg.setLevel(level)
        lg.handlers[:] = handlers
        lg.propagate, lg.disabled = propagate, disabled


def _decision() -> Decision:
    return Decision(
        user_id="ana", rule="cart", outcome="fired", at="2026-01-01T00:00:00Z", trigger_id="t1"
    )


def test_decisions_are_one_debug_line_each(configured: io.StringIO) -> None:
    logs.log_decision(_decision())
    (line,) = configured.getvalue().splitlines()
    fields = json.loads(line)
    assert (fields["level"], fields["logger"], fields["msg"]) == (
        "debug",
        "nudgeflow.decisions",
        "decision",
    )
    assert (fields["rule"], fields["outcome"], fields["user_id"], fields["trigger_id"]) == (
        "cart",
        "fired",
        "ana",
        "t1",
    )
    assert "reason" not in fields  # None fields are left out


def test_no_decision_line_above_debug(configured: io.StringIO) -> None:
    logging.getLogger("nudgeflow.decisions").setLevel(logging.INFO)
    try:
        logs.log_decision(_decision())
    finally:
        logging.getLogger("nudgeflow.decisions").setLevel(logging.NOTSET)
    assert configured.getvalue() == ""


def test_a_delivery_failure_is_a_warning_without_the_url(configured: io.StringIO) -> None:
    trigger = factories.trigger(
        "t1",
        rule="cart",
        user_id="ana",
        variant="default",
        at="x",
        armed_at="x",
        message=f"hi {SECRET}",
        destinations=["crm"],
    )
    step = Step(2, AttemptResult(503, None, 0.1), Outcome.RETRY, "status_503", 5.0, 0)
    log_delivery_failure(trigger, "crm", step)
    fields = json.loads(configured.getvalue())
    assert fields["level"] == "warning" and fields["msg"] == "delivery failed"
    assert {
        k: fields[k] for k in ("destination", "attempt", "outcome", "status", "retry_in_s")
    } == {
        "destination": "crm",
        "attempt": 2,
        "outcome": "retry",
        "status": "503",
        "retry_in_s": 5.0,
    }
    assert "message" not in fields and "url" not in fields
