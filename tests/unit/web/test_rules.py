"""GET /rules/<name>: the per-step funnel the analytics service folds from the audit topics.

The records are a real engine's (a journey from YAML); they reach the analytics service
as encoded records, as its consumer hands them over, and the route must show the same
funnel the backtest report counts from the same records.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from nudgeflow.analytics.service import Analytics
from nudgeflow.backtest.report import Tally
from nudgeflow.config.topics import TopicNames
from nudgeflow.engine.actions import Conversion, Decision, Trigger, encode_action
from nudgeflow.engine.core import Engine
from nudgeflow.pipeline.runtime import Live
from nudgeflow.web.rules import add_rule_routes
from tests.unit.engine.helpers import T0, D, M, Run, ev, make_engine

TOKEN = "rules-token"
TOPICS = TopicNames("t")
FLOW = """
templates: {a: A, b: B}
limits: {max_per_user: {count: 1, per: 1h}}
rules:
  - name: flow
    trigger: cart_add
    exit_on: [purchase]
    conversion: {event: purchase, within: 1d}
    steps:
      - wait: {delay: 10m}
      - send: {template: a}
      - send: {template: b}
      - name: idle
        wait: {delay: 1d}
"""


def _run(engine: Engine) -> list[Any]:
    actions = []
    for i, user in enumerate(["ana", "ben", "cy"]):
        run = Run(engine).send(ev("cart_add", T0, f"a{i}", user=user)).tick(T0 + 10 * M)
        if user == "ana":
            run.send(ev("purchase", T0 + 20 * M, "p", user=user))  # converts, exits at idle
        run.tick(T0 + 2 * D)
        actions += run.actions
    return actions


@pytest.fixture
async def served() -> AsyncIterator[tuple[str, Analytics, Engine]]:
    engine = make_engine(FLOW)
    rt = SimpleNamespace(
        config=SimpleNamespace(rules=tuple(engine.rules.values())),
        topics=TOPICS,
        settings=SimpleNamespace(broker="127.0.0.1:9", topic_prefix="t"),
        live=Live(engine, 3),
    )
    analytics = Analytics(rt)  # type: ignore[arg-type]
    app = web.Application()
    add_rule_routes(app, rt, analytics, TOKEN)  # type: ignore[arg-type]
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    yield str(server.make_url("")).rstrip("/"), analytics, engine
    await server.close()


async def test_the_route_serves_the_funnel_the_backtest_counts(
    served: tuple[str, Analytics, Engine],
) -> None:
    url, analytics, engine = served
    actions = _run(engine)
    topic = {Trigger: TOPICS.triggers, Decision: TOPICS.decisions, Conversion: TOPICS.conversions}
    for action in actions:
        if not (isinstance(action, Decision) and action.outcome == "rearmed"):
            record = SimpleNamespace(topic=topic[type(action)], value=encode_action(action))
            analytics.handle(record)  # type: ignore[arg-type]
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with aiohttp.ClientSession(headers=headers) as s:
        async with s.get(url + "/rules/flow") as resp:
            assert resp.status == 200
            body = await resp.json()
        async with s.get(url + "/rules/nope") as resp:
            assert resp.status == 404
    steps = {s["step"]: s for s in body["steps"]}
    assert (steps[0]["entered"], steps[1]["entered"], steps[1]["sent"]) == (3, 3, 3)
    assert steps[1]["converted"] == 1 and steps[2]["converted"] == 0  # the last send ana got
    assert steps[2]["suppressed"] == {"cap": 3}  # one per hour: the second send is capped
    assert steps["idle"]["exited"] == {"purchase": 1, "completed": 2}
    assert body["journey"] is True
    assert (body["rule_version"], body["paused"]) == (3, False)  # the live version's
    tally = Tally()
    tally.add(actions)
    assert body["steps"] == tally.funnel.rule("flow", engine.rules["flow"].program)


async def test_the_route_needs_the_token(served: tuple[str, Analytics, Engine]) -> None:
    url, _, _ = served
    async with aiohttp.ClientSession() as s, s.get(url + "/rules/flow") as resp:
        assert resp.status == 401


def test_put_rules_errors_name_the_rule_and_the_field() -> None:
    """PUT /rules' 422 body, from the loader's `<file>: rules[<rule>].<field>: <what>`."""
    from nudgeflow.config.loader import ConfigError
    from nudgeflow.web.rules import problems_of

    error = ConfigError(
        "nudgeflow.yaml: rules[big_cart].inactivity: invalid duration '30x'\n"
        "nudgeflow.yaml: templates_dir: directory 'x' not found\n"
        "nudgeflow.yaml: line 3: mapping values are not allowed here\n"
        '  in "<unicode string>", line 3'
    )
    assert problems_of(error) == [
        {"rule": "big_cart", "field": "inactivity", "message": "invalid duration '30x'"},
        {"rule": None, "field": "templates_dir", "message": "directory 'x' not found"},
        {
            "rule": None,
            "field": "line 3",
            "message": 'mapping values are not allowed here in "<unicode string>", line 3',
        },
    ]


async def test_history_lists_the_versions_with_their_diffs(
    served: tuple[str, Analytics, Engine], monkeypatch: pytest.MonkeyPatch
) -> None:
    """GET /rules/history is its own route, not a rule named "history", and needs the token."""
    from nudgeflow.config.versions import diff, new_version
    from nudgeflow.kafka import ruleset

    url, _, _ = served
    one = new_version(FLOW, live=None, author="ana", time="2026-01-01T00:00:00Z", comment="go")
    two = new_version(FLOW, live=one, author="http", time="2026-01-02T00:00:00Z", paused=["flow"])
    asked: list[tuple[str, str]] = []

    async def versions(bootstrap: str, topic: str) -> dict[int, Any]:
        asked.append((bootstrap, topic))
        return {1: one, 2: two}

    monkeypatch.setattr(ruleset, "read_versions", versions)
    async with aiohttp.ClientSession() as s:
        async with s.get(url + "/rules/history") as resp:
            assert resp.status == 401
        headers = {"Authorization": f"Bearer {TOKEN}"}
        async with s.get(url + "/rules/history", headers=headers) as resp:
            assert resp.status == 200
            body = await resp.json()
    assert asked == [("127.0.0.1:9", "t.rules")]
    assert body["live"] == 3
    assert [v["version"] for v in body["versions"]] == [2, 1]
    newest, oldest = body["versions"]
    assert (oldest["author"], oldest["comment"], oldest["time"]) == ("ana", "go", one.time)
    assert oldest["diff"] == diff(None, FLOW) and oldest["sha256"] == one.sha256
    assert newest["paused"] == ["flow"] and "+# paused: flow" in newest["diff"]


async def test_history_answers_503_when_the_topic_cannot_be_read(
    served: tuple[str, Analytics, Engine], monkeypatch: pytest.MonkeyPatch
) -> None:
    from aiokafka.errors import KafkaConnectionError

    from nudgeflow.kafka import ruleset

    async def down(bootstrap: str, topic: str) -> dict[int, Any]:
        raise KafkaConnectionError("no broker")

    monkeypatch.setattr(ruleset, "read_versions", down)
    url, _, _ = served
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with aiohttp.ClientSession(headers=headers) as s, s.get(url + "/rules/history") as r:
        assert r.status == 503 and r.headers["Retry-After"] == "1"
        assert (await r.json())["code"] == "kafka_unavailable"
