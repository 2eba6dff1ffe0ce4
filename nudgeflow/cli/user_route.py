"""The CLI's calls to `/users/<id>` on any worker (`explain`, `forget`).

The worker forwards to the user's owner; the id is percent-encoded whole (web/paths.py).
The admin token, if the worker has one, comes from NUDGEFLOW_API_TOKEN. A worker that
cannot be reached ends the command with exit code 2 and says which address it tried.
"""

from __future__ import annotations

import asyncio
import os
import sys

import aiohttp
import click

from nudgeflow.web.paths import user_url


async def _call(method: str, url: str, user_id: str, timeout_s: float) -> tuple[int, str]:
    token = os.environ.get("NUDGEFLOW_API_TOKEN")
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    async with (
        aiohttp.ClientSession(timeout=timeout) as session,
        session.request(method, user_url(url, user_id), headers=headers) as resp,
    ):
        return resp.status, await resp.text()


def call_user_route(method: str, url: str, user_id: str, timeout_s: float) -> tuple[int, str]:
    """(status, body text) of `method /users/<user_id>` on the worker at `url`."""
    try:
        return asyncio.run(_call(method, url, user_id, timeout_s))
    except (aiohttp.ClientError, TimeoutError) as exc:
        click.echo(f"error: cannot reach {url}: {exc}", err=True)
        sys.exit(2)
