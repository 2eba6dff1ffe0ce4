"""GET /rules and /rules/history answer from the follower's RuleBook (kafka/ruleset.py),
not from a read of the rules topic per call; before the follower has caught up they wait
for it, and read the topic when it does not catch up in time (never stale silently)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from nudgeflow.analytics.service import Analytics
from nudgeflow.config.topics import TopicNames
from nudgeflow.config.versions import RuleVersion, history, new_version
from nudgeflow.kafka import ruleset
from nudgeflow.pipeline.runtime import Live
from nudgeflow.web import rules as rule_routes
from tests.unit.engine.helpers import make_engine
from tests.unit.web.test_rules import FLOW, TOKEN

ONE = new_version(FLOW, live=None, author="ana", time="2026-01-01T00:00:00Z", comment="go")
TWO = new_version(FLOW, live=ONE, author="http", time="2026-01-02T00:00:00Z", paused=["flow"])
HEADERS = {"Authorization": f"Bearer {TOKEN}"}


class Topic:
    """Stands in for the rules topic: counts the reads the routes make."""

    def __init__(self, won: dict[int, RuleVersion]) -> None:
        self.won = won
        self.reads = 0

    async def read_versions(self, bootstrap: str, topic: str) -> dict[int, RuleVersion]:
        self.reads += 1
        return dict(self.won)


@pytest.fixture
async def served(
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[tuple[str, ruleset.RuleBook, Topic]]:
    book = ruleset.RuleBook()
    book.followed = True
    topic = Topic({1: ONE, 2: TWO})
    monkeypatch.setattr(ruleset, "read_versions", topic.read_versions)
    rt = SimpleNamespace(
        config=SimpleNamespace(rules=()),
        topics=TopicNames("t"),
        settings=SimpleNamespace(broker="127.0.0.1:9", topic_prefix="t"),
        live=Live(make_engine(FLOW), 2),
        rules_book=book,
        rules_error=None,
        rules_swap_delay_s=0.05,
    )
    app = web.Application()
    rule_routes.add_rule_routes(app, rt, Analytics(rt), TOKEN)  # type: ignore[arg-type]
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    yield str(server.make_url("")).rstrip("/"), book, topic
    await server.close()


async def _get(url: str) -> Any:
    async with aiohttp.ClientSession(headers=HEADERS) as s, s.get(url) as resp:
        assert resp.status == 200, await resp.text()
        return await resp.json()


async def _waiting(book: ruleset.RuleBook, asked: asyncio.Future[Any]) -> None:
    """Until the route waits on the book's condition (or has answered: a failure)."""
    while not book._changed._waiters and not asked.done():
        await asyncio.sleep(0.01)
    assert not asked.done(), asked.result()


async def _fill(book: ruleset.RuleBook) -> None:
    for record in (ONE, TWO, ONE):  # a number read twice: the first record keeps it
        book.add(record)
    await book.settled(caught_up=True)


async def test_a_caught_up_book_answers_without_reading_the_topic(
    served: tuple[str, ruleset.RuleBook, Topic],
) -> None:
    url, book, topic = served
    await _fill(book)
    for _ in range(3):
        live = await _get(url + "/rules")
        past = await _get(url + "/rules/history")
    assert topic.reads == 0
    assert (live["version"], live["sha256"], live["author"], live["comment"]) == (
        2, TWO.sha256, "http", ""
    )  # fmt: skip
    assert live["paused"] == ["flow"] and live["rules"] == [{"name": "flow", "paused": False}]
    assert past == {"live": 2, "versions": history({1: ONE, 2: TWO})}  # the topic read's shape
    assert book.history() is book.history()  # the diffs are computed once per version


async def test_a_route_before_the_catch_up_waits_for_it(
    served: tuple[str, ruleset.RuleBook, Topic],
) -> None:
    url, book, topic = served
    asked = asyncio.ensure_future(_get(url + "/rules/history"))
    await _waiting(book, asked)
    await _fill(book)
    past = await asked
    assert [v["version"] for v in past["versions"]] == [2, 1] and topic.reads == 0


async def test_a_book_that_does_not_catch_up_in_time_falls_back_to_the_topic(
    served: tuple[str, ruleset.RuleBook, Topic], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not the follower's empty book (stale): the topic, read as before this book."""
    url, _, topic = served
    monkeypatch.setattr(rule_routes, "CATCH_UP_WAIT_S", 0.05)
    live = await _get(url + "/rules")
    past = await _get(url + "/rules/history")
    assert topic.reads == 2
    assert live["sha256"] == TWO.sha256 and [v["version"] for v in past["versions"]] == [2, 1]


async def test_a_put_returns_once_this_worker_has_acted_on_its_version(
    served: tuple[str, ruleset.RuleBook, Topic], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Read-after-write: PUT /rules answers after the follower has read (and swapped to
    or refused) the version it published, so a GET right after shows it."""
    url, book, _ = served
    book.add(ONE)
    await book.settled(caught_up=True)

    async def apply(*args: Any, **kwargs: Any) -> ruleset.Applied:
        return ruleset.Applied(TWO, "the diff", 1)

    async def put() -> tuple[int, Any]:
        async with (
            aiohttp.ClientSession(headers=HEADERS) as s,
            s.put(url + "/rules", json={"document": FLOW}) as resp,
        ):
            return resp.status, await resp.json()

    monkeypatch.setattr(ruleset, "apply", apply)
    asked = asyncio.ensure_future(put())
    await _waiting(book, asked)
    book.add(TWO)
    await book.settled(caught_up=True)
    status, body = await asked
    assert (status, body["version"], body["previous"]) == (201, 2, 1)


async def test_the_book_tells_when_a_version_has_been_acted_on() -> None:
    book = ruleset.RuleBook()
    assert not await book.wait_handled(1, 0.01)
    waiting = asyncio.ensure_future(book.wait_handled(2, 5))
    book.add(ONE)
    await book.settled(caught_up=False)
    assert not waiting.done() and book.handled == 1
    book.add(TWO)
    await book.settled(caught_up=False)
    assert await waiting and not book.caught_up
