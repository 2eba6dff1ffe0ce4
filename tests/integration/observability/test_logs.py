"""Structured logs of a live worker at debug level (issue 6, item 7): one JSON line per
decision and per failed delivery, and no configured secret anywhere in the log or on
/metrics (nor a user id in a metric label).
"""

from __future__ import annotations

import json

import aiohttp
import pytest

from tests.integration.observability.conftest import USERS, Observed

pytestmark = pytest.mark.kafka


def _records(obs: Observed) -> list[dict]:
    assert obs.worker.log_path is not None
    out = []
    for line in obs.worker.log_path.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            out.append(json.loads(line))
    return out


def _secret_values(obs: Observed) -> dict[str, str]:
    """Each secret, and for whsec_ secrets also the bare key (what a library might log)."""
    values = dict(obs.secrets)
    for name, value in obs.secrets.items():
        if value.startswith("whsec_"):
            values[name + " (key)"] = value.removeprefix("whsec_")
    return values


def test_one_debug_line_per_decision_and_a_warning_per_failed_delivery(observed: Observed):
    records = _records(observed)
    assert records, "no JSON log lines"
    assert {r["level"] for r in records} >= {"debug", "info", "warning"}

    decisions = [r for r in records if r["logger"] == "nudgeflow.decisions"]
    assert {r["level"] for r in decisions} == {"debug"}
    fired = {(r["rule"], r["user_id"]) for r in decisions if r["outcome"] == "fired"}
    assert {("ping", u) for u in USERS} <= fired
    assert {("cart_reminder", u) for u in USERS} <= fired
    armed = [r for r in decisions if r["rule"] == "long_wait" and r["outcome"] == "armed"]
    assert sorted(r["user_id"] for r in armed) == sorted(USERS)
    assert all(r["deadline"] for r in armed)

    failures = [r for r in records if r["logger"] == "nudgeflow.deliveries"]
    assert failures and {r["level"] for r in failures} == {"warning"}
    assert {r["destination"] for r in failures} == {"flaky"}  # `good` never failed
    assert {r["outcome"] for r in failures} == {"retry", "dead"}
    assert {r["status"] for r in failures} <= {"503", "circuit_open"}
    # The destination's URL is not in the line: only its name.
    assert not any(observed.flaky.url in json.dumps(r) for r in failures)
    print(
        f"\n{len(records)} JSON log lines; {len(decisions)} decision lines (debug), "
        f"{len(failures)} delivery-failure lines (warning). Example:\n  {json.dumps(failures[0])}"
    )


async def test_no_secret_in_the_log_or_on_metrics(observed: Observed):
    assert observed.worker.log_path is not None
    log_text = observed.worker.log_path.read_text(errors="replace")
    async with (
        aiohttp.ClientSession() as session,
        session.get(observed.worker.url + "/metrics") as resp,
    ):
        metrics_text = await resp.text()
    # The log is a real debug log of real work (not an empty file that trivially passes).
    assert len(log_text) > 50_000 and '"logger": "aiokafka' in log_text

    leaks = {
        where: [name for name, value in _secret_values(observed).items() if value in text]
        for where, text in (("log", log_text), ("/metrics", metrics_text))
    }
    assert leaks == {"log": [], "/metrics": []}
    # No user id in any metric label either.
    assert not any(u in metrics_text for u in USERS)
    print(
        f"\nchecked {len(_secret_values(observed))} secret values against "
        f"{len(log_text)} bytes of debug log and {len(metrics_text)} bytes of /metrics: none found "
        f"({log_text.count('[redacted]')} redactions by the formatter)"
    )
