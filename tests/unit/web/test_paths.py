"""The encoded user route: one encoding for the forward and `nudgeflow explain`."""

from __future__ import annotations

from urllib.parse import unquote

import pytest

from nudgeflow.web.paths import user_path, user_url


@pytest.mark.parametrize(
    ("user_id", "path"),
    [
        ("ana", "/users/ana"),
        ("ana?x", "/users/ana%3Fx"),
        ("acme/ana", "/users/acme%2Fana"),
        ("pct%41", "/users/pct%2541"),
        ("a#b", "/users/a%23b"),
        ("..", "/users/%2E%2E"),
        ("../metrics", "/users/%2E%2E%2Fmetrics"),
        ("café", "/users/caf%C3%A9"),
        ("a b+c", "/users/a%20b%2Bc"),
    ],
)
def test_every_separator_dot_and_non_ascii_byte_is_encoded(user_id: str, path: str) -> None:
    assert user_path(user_id) == path
    assert unquote(path.removeprefix("/users/")) == user_id


def test_the_url_keeps_the_encoding_and_a_path_prefix() -> None:
    url = user_url("http://w:6066/nf/", "../x?y")
    assert url.raw_path == "/nf/users/%2E%2E%2Fx%3Fy" and url.raw_query_string == ""
    assert str(user_url("http://w:6066", "..")) == "http://w:6066/users/%2E%2E"
