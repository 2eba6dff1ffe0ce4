"""The demo receiver verifies what the sender signs."""

from __future__ import annotations

import aiohttp

from nudgeflow.cli.receiver import start_demo_receiver
from nudgeflow.config.destinations import Destination
from nudgeflow.delivery.sender import Sender
from tests.fixtures.receivers import free_port

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
OTHER = "whsec_QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo0NTY3OA=="


async def test_demo_receiver_accepts_signed_and_rejects_forged() -> None:
    port = free_port()
    runner = await start_demo_receiver(port, SECRET)
    sender = Sender()
    try:
        url = f"http://127.0.0.1:{port}/webhooks"
        good = Destination(url=url, secret=SECRET, allow_private=True)
        forged = Destination(url=url, secret=OTHER, allow_private=True)
        body = b'{"rule":"abandoned_cart","user_id":"ana","message":"hi"}'
        assert (await sender.attempt("demo", good, "t-1", body)).status == 200
        assert (await sender.attempt("demo", forged, "t-2", body)).status == 401
        async with aiohttp.ClientSession() as s, s.post(url, data=body) as resp:
            assert resp.status == 401  # unsigned
    finally:
        await sender.close()
        await runner.cleanup()
