"""Standard Webhooks signatures (https://www.standardwebhooks.com/).

Signing goes through the reference `standardwebhooks` library so our bytes
match what receivers verify with. During a secret rotation every listed
secret signs, and the signatures are sent space-separated in one header:
receivers holding either the new or the old secret accept the webhook.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from standardwebhooks.webhooks import Webhook

from nudgeflow.config.destinations import Destination


def destination_secrets(dest: Destination) -> list[str]:
    """Current secret first, then the old ones still honoured."""
    secrets = [dest.secret] if dest.secret is not None else []
    secrets.extend(dest.old_secrets)
    return [s.get_secret_value() for s in secrets]


def signature(secrets: Sequence[str], msg_id: str, timestamp: int, body: bytes) -> str:
    """`v1,<b64>` per secret, space-separated."""
    when = datetime.fromtimestamp(timestamp, tz=UTC)
    data = body.decode("utf-8")
    return " ".join(Webhook(s).sign(msg_id=msg_id, timestamp=when, data=data) for s in secrets)


def webhook_headers(
    secrets: Sequence[str], msg_id: str, timestamp: int, body: bytes
) -> dict[str, str]:
    """The three Standard Webhooks headers (no signature when no secret is set)."""
    headers = {"webhook-id": msg_id, "webhook-timestamp": str(timestamp)}
    if secrets:
        headers["webhook-signature"] = signature(secrets, msg_id, timestamp, body)
    return headers
