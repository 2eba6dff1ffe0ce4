import time

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from nudgeflow.config.destinations import Destination
from nudgeflow.delivery.signing import destination_secrets, signature, webhook_headers

SPEC_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
NEW = "whsec_" + "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo0NTY3OA=="


def test_spec_known_answer_vector() -> None:
    sig = signature(
        [SPEC_SECRET], "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, b'{"test": 2432232314}'
    )
    assert sig == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_headers_verify_with_reference_library() -> None:
    body = b'{"trigger_id":"t-1"}'
    headers = webhook_headers([SPEC_SECRET], "t-1", int(time.time()), body)
    assert headers["webhook-id"] == "t-1"
    assert Webhook(SPEC_SECRET).verify(body, headers) == {"trigger_id": "t-1"}


def test_tampered_body_fails_verification() -> None:
    headers = webhook_headers([SPEC_SECRET], "t-1", int(time.time()), b'{"a":1}')
    with pytest.raises(WebhookVerificationError):
        Webhook(SPEC_SECRET).verify(b'{"a":2}', headers)


def test_rotation_signs_with_current_and_old_secret() -> None:
    dest = Destination(url="https://example.com/h", secret=NEW, old_secrets=[SPEC_SECRET])
    secrets = destination_secrets(dest)
    assert secrets == [NEW, SPEC_SECRET]
    body = b"{}"
    headers = webhook_headers(secrets, "t-2", int(time.time()), body)
    assert len(headers["webhook-signature"].split(" ")) == 2
    Webhook(NEW).verify(body, headers)  # receivers on either secret accept it
    Webhook(SPEC_SECRET).verify(body, headers)


def test_no_secret_no_signature_header() -> None:
    headers = webhook_headers([], "t-3", 1, b"{}")
    assert "webhook-signature" not in headers
    assert headers["webhook-timestamp"] == "1"
