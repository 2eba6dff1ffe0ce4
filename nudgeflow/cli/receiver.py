"""A demo webhook receiver for `nudgeflow dev`: verifies and prints each delivery.

It is what a user's endpoint should do: verify the Standard Webhooks
signature with the reference library, refuse (401) what does not verify,
and treat `webhook-id` as an idempotency key.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import click
from aiohttp import web
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

_SEEN = web.AppKey("seen", set)
OnDelivery = Callable[[dict[str, Any]], Coroutine[Any, Any, None]]
_pending: set[asyncio.Task[None]] = set()  # strong references to the on_delivery calls


def _make_handler(
    verifier: Webhook | None, on_delivery: OnDelivery | None = None
) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def handle(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        headers = dict(request.headers)
        msg_id = request.headers.get("webhook-id", "?")
        if verifier is not None:
            try:
                verifier.verify(body, headers, json_parse=False)
            except WebhookVerificationError as exc:
                click.secho(f"[receiver] REJECTED {msg_id}: {exc}", fg="red")
                return web.json_response({"error": str(exc)}, status=401)
        seen: set[str] = request.app[_SEEN]
        duplicate = msg_id in seen
        seen.add(msg_id)
        try:
            payload = json.loads(body)
        except ValueError:
            payload = {}
        step = f" step={payload['step']}" if "step" in payload else ""
        click.secho(
            f"[receiver] {'duplicate ' if duplicate else ''}{msg_id} rule={payload.get('rule')}"
            f"{step} user={payload.get('user_id')} variant={payload.get('variant')} "
            f"signature={'ok' if verifier else 'unchecked'}\n"
            f"           {payload.get('message', '')!s:.200}",
            fg="yellow" if duplicate else "green",
        )
        if on_delivery is not None and not duplicate:  # after the answer, not before it
            task = asyncio.get_running_loop().create_task(on_delivery(payload))
            _pending.add(task)
            task.add_done_callback(_pending.discard)
        return web.json_response({"ok": True, "duplicate": duplicate})

    return handle


def build_app(secret: str | None, on_delivery: OnDelivery | None = None) -> web.Application:
    """`on_delivery` is called with each new payload (`nudgeflow dev`: the demo's clicks)."""
    app = web.Application()
    app[_SEEN] = set()
    handler = _make_handler(Webhook(secret) if secret else None, on_delivery)
    app.router.add_post("/{tail:.*}", handler)
    return app


async def start_demo_receiver(
    port: int, secret: str, host: str = "127.0.0.1", on_delivery: OnDelivery | None = None
) -> web.AppRunner:
    """Start on host:port; stop with `await runner.cleanup()`."""
    runner = web.AppRunner(build_app(secret, on_delivery), handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, envvar="NUDGEFLOW_DEMO_HOST")
@click.option("--port", default=6067, show_default=True, type=int, envvar="NUDGEFLOW_DEMO_PORT")
@click.option(
    "--secret",
    envvar="NUDGEFLOW_DEMO_SECRET",
    default=None,
    help="whsec_... to verify signatures with (unset: accept unchecked)",
)
def main(host: str, port: int, secret: str | None) -> None:
    """The demo receiver on its own (the docker compose `receiver` service)."""
    click.echo(f"[receiver] listening on http://{host}:{port}/ (any path)")
    web.run_app(build_app(secret), host=host, port=port, print=None)


if __name__ == "__main__":
    main()
