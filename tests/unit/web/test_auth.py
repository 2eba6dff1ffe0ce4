"""Token and write-key checks shared by ingestion and admin routes."""

from __future__ import annotations

import base64

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from nudgeflow.web.auth import (
    basic_username,
    bearer_token,
    require_token,
    tokens_match,
    write_key_ok,
)


def request(authorization: str | None = None, path: str = "/admin") -> web.Request:
    headers = {"Authorization": authorization} if authorization is not None else {}
    return make_mocked_request("GET", path, headers=headers)


async def handler(_request: web.Request) -> web.StreamResponse:
    return web.Response(text="secret stuff")


@pytest.mark.parametrize(
    ("authorization", "path", "status"),
    [
        (None, "/admin", 401),
        ("Bearer nope", "/admin", 401),
        ("Token s3cret", "/admin", 401),
        ("Bearer ", "/admin", 401),
        (None, "/admin?access_token=s3cret", 401),  # query tokens only where allowed
        ("Bearer s3cret", "/admin", 200),
    ],
)
async def test_require_token(authorization: str | None, path: str, status: int) -> None:
    response = await require_token("s3cret")(handler)(request(authorization, path))
    assert response.status == status
    if status == 401:
        assert isinstance(response, web.Response)
        assert response.text is not None and "secret stuff" not in response.text
        assert response.headers["WWW-Authenticate"] == 'Bearer realm="nudgeflow"'


async def test_require_token_is_a_no_op_without_a_token() -> None:
    assert (await require_token(None)(handler)(request())).status == 200


def test_query_token_only_when_allowed() -> None:
    req = request(path="/ws/events?access_token=abc")
    assert bearer_token(req) is None
    assert bearer_token(req, allow_query=True) == "abc"


@pytest.mark.parametrize(
    ("authorization", "expected"),
    [
        ("Basic " + base64.b64encode(b"wk-1:").decode(), "wk-1"),
        ("basic " + base64.b64encode(b"wk-2:ignored").decode(), "wk-2"),
        ("Basic !!!not-base64", None),
        ("Basic " + base64.b64encode(b"\xff\xfe:").decode(), None),
        ("Bearer wk-1", None),
        (None, None),
    ],
)
def test_basic_username(authorization: str | None, expected: str | None) -> None:
    assert basic_username(request(authorization)) == expected


def test_tokens_match() -> None:
    assert tokens_match("abc", "abc")
    assert not tokens_match("abd", "abc")
    assert not tokens_match(None, "abc")
    assert not tokens_match("\ud800", "abc")  # odd input is a mismatch, not a crash


@pytest.mark.parametrize(
    ("given", "keys", "token", "ok"),
    [
        (None, frozenset(), None, True),
        ("x", frozenset(), None, True),
        ("x", frozenset({"a"}), None, False),
        ("a", frozenset({"a"}), None, True),
        (None, frozenset({"a"}), None, False),
        ("x", frozenset(), "t", False),
        (None, frozenset(), "t", False),
        ("t", frozenset(), "t", True),
        ("t", frozenset({"a"}), "t", True),
    ],
)
def test_write_key_rule(
    given: str | None, keys: frozenset[str], token: str | None, ok: bool
) -> None:
    assert write_key_ok(given, keys, token) is ok
