"""`nudgeflow forget <user_id>`: erase a user through any worker (DELETE /users/<id>).

The worker forwards to the user's owner (web/erase.py); the id is percent-encoded whole
(web/paths.py). Erasing an unknown or already erased user is not an error: it says so
and exits 0, so a script may run it twice.
"""

from __future__ import annotations

import sys

import click

from nudgeflow.cli.user_route import call_user_route

_SAID = {
    204: "erased: state, timers and timeline removed; pending retries will be dropped",
    202: "erasure queued: the worker will apply it in the user's order",
    404: "nothing to erase: no state for this user (unknown, or erased already)",
}


@click.command()
@click.argument("user_id")
@click.option(
    "--url",
    default="http://127.0.0.1:6066",
    show_default=True,
    help="any worker's web address (it forwards to the user's owner)",
)
def command(user_id: str, url: str) -> None:
    """Erase USER_ID: state, timers, timeline; one audit record without personal data.

    The admin token, if the worker has one, comes from NUDGEFLOW_API_TOKEN.
    """
    status, body = call_user_route("DELETE", url, user_id, timeout_s=30)
    if status in _SAID:
        click.echo(_SAID[status])
        return
    click.echo(f"error: HTTP {status}: {body}", err=True)
    sys.exit(1)
