"""The user route's URL, built one way by everyone who calls it.

A worker forwarding `GET /users/<id>` to the owner and `nudgeflow explain` both
build `/users/<id>` from the decoded id, never from a path a client sent: every
byte but letters, digits and `-_~` is percent-encoded, dots too, so no client,
proxy or server can read a separator, a query, a fragment, a second round of
decoding or a dot segment into it. Ids with `/ ? # %`, dots and non-ASCII
characters round-trip (issue 21 item 4). Kept apart from users.py so the CLI
does not import the tables to build a URL.
"""

from __future__ import annotations

from urllib.parse import quote

from yarl import URL


def user_path(user_id: str) -> str:
    """`/users/<id>`, encoded as above."""
    return "/users/" + quote(user_id, safe="").replace(".", "%2E")


def user_url(base: str, user_id: str) -> URL:
    """`base` (a worker's web address, maybe with a path prefix) + the user route."""
    root = URL(base)
    return root.with_path(root.raw_path.rstrip("/") + user_path(user_id), encoded=True)
