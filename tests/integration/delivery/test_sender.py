"""The HTTP attempt against real aiohttp receivers (no Kafka needed)."""

from __future__ import annotations

import time

import pytest
from standardwebhooks.webhooks import Webhook

from nudgeflow.config.destinations import Destination
from nudgeflow.delivery.sender import Sender
from tests.fixtures.receivers import ReceiverFactory, hang, respond

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
BODY = b'{"message":"hi","trigger_id":"t-1"}'


def dest(url: str, **kw: object) -> Destination:
    return Destination(url=url, secret=SECRET, allow_private=True, **kw)  # type: ignore[arg-type]


@pytest.fixture
async def sender():  # type: ignore[no-untyped-def]
    s = Sender()
    yield s
    await s.close()


async def test_200_signed_and_verifiable(receiver_factory: ReceiverFactory, sender: Sender) -> None:
    rx = await receiver_factory()
    d = dest(rx.url, headers={"x-team": "growth"})
    result = await sender.attempt("d", d, "t-1", BODY)
    assert result.status == 200 and result.error_class is None
    [req] = rx.requests
    assert req.webhook_id == "t-1"
    assert req.headers["x-team"] == "growth"
    assert req.headers["content-type"] == "application/json"
    assert Webhook(SECRET).verify(req.body, req.headers) == {"message": "hi", "trigger_id": "t-1"}


async def test_500_then_200(receiver_factory: ReceiverFactory, sender: Sender) -> None:
    rx = await receiver_factory(script=[respond(500), respond(500)])
    statuses = [(await sender.attempt("d", dest(rx.url), "t-1", BODY)).status for _ in range(3)]
    assert statuses == [500, 500, 200]


async def test_429_retry_after_is_read(receiver_factory: ReceiverFactory, sender: Sender) -> None:
    rx = await receiver_factory(script=[respond(429, retry_after="1")])
    result = await sender.attempt("d", dest(rx.url), "t-1", BODY)
    assert result.status == 429 and result.retry_after_s == 1.0


async def test_retry_after_ignored_on_other_statuses(
    receiver_factory: ReceiverFactory, sender: Sender
) -> None:
    rx = await receiver_factory(script=[respond(500, retry_after="99")])
    result = await sender.attempt("d", dest(rx.url), "t-1", BODY)
    assert result.status == 500 and result.retry_after_s is None


async def test_hang_past_timeout(receiver_factory: ReceiverFactory, sender: Sender) -> None:
    rx = await receiver_factory(default=hang(10))
    started = time.monotonic()
    result = await sender.attempt("d", dest(rx.url, timeout=0.3), "t-1", BODY)
    assert result.status is None and result.error_class == "timeout"
    assert time.monotonic() - started < 5  # generous: bounded by the timeout, not the hang


async def test_410(receiver_factory: ReceiverFactory, sender: Sender) -> None:
    rx = await receiver_factory(default=respond(410))
    assert (await sender.attempt("d", dest(rx.url), "t-1", BODY)).status == 410


async def test_302_not_followed(receiver_factory: ReceiverFactory, sender: Sender) -> None:
    rx = await receiver_factory(script=[respond(302, location="/elsewhere")])
    result = await sender.attempt("d", dest(rx.url), "t-1", BODY)
    assert result.status == 302
    assert [r.path for r in rx.requests] == ["/hook"]


async def test_connection_refused(closed_port: int, sender: Sender) -> None:
    result = await sender.attempt("d", dest(f"http://127.0.0.1:{closed_port}/"), "t-1", BODY)
    assert result.status is None and result.error_class == "connection"


async def test_private_literal_refused_at_send_time(
    receiver_factory: ReceiverFactory, sender: Sender
) -> None:
    rx = await receiver_factory()
    # model_construct skips the config-time check, as a hand-built object would
    unchecked = Destination.model_construct(**{**dest(rx.url).__dict__, "allow_private": False})
    result = await sender.attempt("d", unchecked, "t-1", BODY)
    assert result.error_class == "ssrf"
    assert rx.requests == []


async def test_hostname_resolving_to_private_refused(
    receiver_factory: ReceiverFactory, sender: Sender
) -> None:
    """The guard runs on resolved addresses: a name whose DNS answer is loopback."""
    rx = await receiver_factory()
    url = f"http://localhost:{rx.port}/hook"
    refused = await sender.attempt("d", Destination(url=url, allow_private=False), "t-1", BODY)
    assert refused.error_class == "ssrf"
    assert rx.requests == []
