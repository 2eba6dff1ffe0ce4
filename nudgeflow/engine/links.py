"""Signed tracking links and open pixels (issue 19.5): clicks and opens without producer work.

A template writes `{{ track_link("https://shop.example/cart") }}`; the message then holds
`<base>/r/<token>`. The worker answering `GET /r/<token>` checks the token, records a
`message_clicked` event for the user (properties: trigger_id, rule, step, variant, url) on
the normal ingestion path, and answers 302 to the link. `{{ track_open() }}` is the same
for an open pixel, `<base>/o/<token>.gif`, which records `message_opened`.

Token: `<payload>.<mac>`, both base64url without padding. The payload is a JSON array
[version, kind, trigger id, user id, rule, step, variant, url, expiry ms]; the MAC is
HMAC-SHA256 over the payload text with a key derived from the link secret (so it cannot
be mistaken for any other HMAC the secret makes, e.g. discount codes). Nothing is stored:
the token carries what the event needs, and the MAC makes it unforgeable. Checks, in this
order, so that nothing a forged token says is ever believed: length, shape, MAC (400),
then the payload (400), then the expiry (410). A refused token is never redirected
anywhere, so the route is not an open redirect.

Pure: hashlib/hmac/json only, no clock (the expiry is the send's logical time plus the
TTL, the check's `now` is given).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

VERSION = 1
CLICK, OPEN = "c", "o"
MAX_URL = 2048  # a link longer than this is refused when the template renders
MAX_TOKEN = 4096  # a longer path segment is refused before any work
DEFAULT_BASE_URL = "http://127.0.0.1:6066"
DEFAULT_TTL_MS = 90 * 86_400_000
_DOMAIN = b"nudgeflow tracking links v1"


class LinkError(ValueError):
    """A token that is refused: `status` 400 (bad, forged, truncated) or 410 (expired)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Link:
    """What one token says: whose message, which send, where to, until when."""

    kind: str  # CLICK or OPEN
    trigger_id: str
    user_id: str
    rule: str
    step: int | str
    variant: str
    url: str  # "" for an open pixel
    expires_ms: int

    def event_properties(self) -> dict[str, Any]:
        """The `message_clicked` / `message_opened` properties the engine attributes."""
        props: dict[str, Any] = {
            "trigger_id": self.trigger_id,
            "rule": self.rule,
            "step": self.step,
            "variant": self.variant,
        }
        if self.kind == CLICK:
            props["url"] = self.url
        return props


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


_B64_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def _is_b64(text: str) -> bool:
    """Non-empty base64url text (ASCII only: nothing else reaches the MAC or the decoder)."""
    return bool(text) and all(c in _B64_CHARS for c in text)


def _unb64(text: str) -> bytes:
    if not _is_b64(text):
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def check_url(url: object) -> str:
    """An absolute http(s) URL with a host, at most MAX_URL chars; ValueError otherwise."""
    if not isinstance(url, str) or not url:
        raise ValueError("a tracked link must be a non-empty string")
    if len(url) > MAX_URL:
        raise ValueError(f"a tracked link is at most {MAX_URL} characters")
    if any(ord(c) < 0x21 or ord(c) == 0x7F for c in url):
        raise ValueError("a tracked link has no spaces or control characters")
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise ValueError(f"a tracked link must be an absolute http(s) URL, got {url[:100]!r}")
    return url


class LinkSigner:
    """Makes and checks tokens with one secret; builds URLs under `base_url`."""

    def __init__(
        self, secret: bytes, base_url: str = DEFAULT_BASE_URL, ttl_ms: int = DEFAULT_TTL_MS
    ) -> None:
        self._key = hmac.new(secret, _DOMAIN, hashlib.sha256).digest()
        self.base_url = base_url.rstrip("/")
        self.ttl_ms = ttl_ms

    def __repr__(self) -> str:  # never the key
        return f"LinkSigner(base_url={self.base_url!r}, ttl_ms={self.ttl_ms})"

    def _mac(self, payload: str) -> str:
        return _b64(hmac.new(self._key, payload.encode("ascii"), hashlib.sha256).digest())

    def token(self, link: Link) -> str:
        fields = [VERSION, link.kind, link.trigger_id, link.user_id, link.rule, link.step]
        fields += [link.variant, link.url, link.expires_ms]
        payload = _b64(json.dumps(fields, separators=(",", ":")).encode())
        return f"{payload}.{self._mac(payload)}"

    def click_url(self, link: Link) -> str:
        check_url(link.url)
        return f"{self.base_url}/r/{self.token(link)}"

    def open_url(self, link: Link) -> str:
        return f"{self.base_url}/o/{self.token(link)}.gif"

    def verify(self, token: str, kind: str, now_ms: int) -> Link:
        """The link a token of `kind` names; LinkError(400) if it is not one of ours
        for that kind, LinkError(410) once it expired."""
        if len(token) > MAX_TOKEN:
            raise LinkError(400, f"token longer than {MAX_TOKEN} characters")
        payload, dot, mac = token.partition(".")
        if not dot or not _is_b64(payload) or not _is_b64(mac):
            raise LinkError(400, "malformed token")
        if not hmac.compare_digest(self._mac(payload), mac):
            raise LinkError(400, "bad signature (forged, truncated or signed with another secret)")
        link = _decode(payload)
        if link.kind != kind:
            raise LinkError(400, "token is not for this route")
        if now_ms >= link.expires_ms:
            raise LinkError(410, "link expired")
        return link


def _decode(payload: str) -> Link:
    """The signed payload as a Link; a MAC-valid payload that does not parse (an older
    format, a bug) is a 400 too, never a redirect."""
    try:
        fields = json.loads(_unb64(payload))
    except (ValueError, binascii.Error) as exc:
        raise LinkError(400, "malformed token payload") from exc
    if not isinstance(fields, list) or len(fields) != 9 or fields[0] != VERSION:
        raise LinkError(400, "unknown token version")
    _, kind, tid, user, rule, step, variant, url, expires = fields
    texts = (kind, tid, user, rule, variant, url)
    if not all(isinstance(t, str) for t in texts) or kind not in (CLICK, OPEN):
        raise LinkError(400, "malformed token payload")
    if isinstance(expires, bool) or not isinstance(expires, int):
        raise LinkError(400, "malformed token payload")
    if isinstance(step, bool) or not isinstance(step, int | str):
        raise LinkError(400, "malformed token payload")
    if kind == CLICK:
        try:
            check_url(url)
        except ValueError as exc:
            raise LinkError(400, str(exc)) from exc
    return Link(kind, tid, user, rule, step, variant, url, expires)
