"""Tracked-link tokens (engine/links.py) and the template helpers that make them."""

from __future__ import annotations

import base64
import json

import pytest

from nudgeflow.engine.links import CLICK, OPEN, Link, LinkError, LinkSigner
from nudgeflow.engine.templates import SAMPLE_CONTEXT, TemplateError, Templates

SECRET = b"link-test-secret"
NOW = 1_714_564_800_000
DAY = 86_400_000
LINK = Link(
    CLICK, "trg_abc", "ana", "cart", "reminder", "fast", "https://shop.example/c?x=1", NOW + DAY
)


def signer(secret: bytes = SECRET) -> LinkSigner:
    return LinkSigner(secret, "https://t.example/", DAY)


def token_of(url: str) -> str:
    return url.rsplit("/", 1)[1].removesuffix(".gif")


def refused(token: str, kind: str = CLICK, now: int = NOW, secret: bytes = SECRET) -> int:
    with pytest.raises(LinkError) as info:
        signer(secret).verify(token, kind, now)
    return info.value.status


def test_a_token_round_trips_under_the_base_url() -> None:
    url = signer().click_url(LINK)
    assert url.startswith("https://t.example/r/")
    assert signer().verify(token_of(url), CLICK, NOW) == LINK
    pixel = signer().open_url(Link(OPEN, "trg_abc", "ana", "cart", 2, "b", "", NOW + DAY))
    assert pixel.endswith(".gif")
    assert signer().verify(token_of(pixel), OPEN, NOW).step == 2


def test_a_forged_payload_or_mac_is_a_400() -> None:
    token = signer().token(LINK)
    payload, mac = token.split(".")
    evil = dict(zip("vktursbul", json.loads(base64.urlsafe_b64decode(payload + "==")), strict=True))
    evil["l"] = "https://evil.example/"
    fields = [evil[k] for k in "vktursbul"]
    forged = base64.urlsafe_b64encode(json.dumps(fields).encode()).rstrip(b"=").decode()
    assert refused(f"{forged}.{mac}") == 400  # another link, the old MAC
    flipped = mac[:-1] + ("A" if mac[-1] != "A" else "B")
    assert refused(f"{payload}.{flipped}") == 400
    assert refused("not-a-token") == 400
    assert refused("\x14\u00f6\udcf3.\u00b3") == 400  # not ASCII (not even valid UTF-8)
    assert refused(f"{payload}\u00e9.{mac}") == 400
    assert refused("") == 400
    assert refused("." * 3) == 400
    assert refused("a" * 5000 + "." + mac) == 400


def test_a_truncated_token_is_a_400_never_a_link() -> None:
    token = signer().token(LINK)
    for cut in (1, 5, len(token) // 2, len(token) - 44, len(token) - 1):
        assert refused(token[:cut]) == 400, cut
    assert refused(token + "x") == 400


def test_another_secret_does_not_verify() -> None:
    token = LinkSigner(b"other-secret", "https://t.example", DAY).token(LINK)
    assert refused(token) == 400


def test_an_expired_token_is_a_410_and_only_after_its_mac_checks() -> None:
    token = signer().token(LINK)
    assert signer().verify(token, CLICK, NOW + DAY - 1) == LINK
    assert refused(token, now=NOW + DAY) == 410
    other = LinkSigner(b"x", "https://t.example", DAY).token(LINK)
    assert refused(other, now=NOW + 2 * DAY) == 400  # forged and expired: forged


def test_a_click_token_is_not_a_pixel_and_back() -> None:
    assert refused(signer().token(LINK), kind=OPEN) == 400
    pixel = Link(OPEN, "t", "u", "r", 0, "v", "", NOW + DAY)
    assert refused(signer().token(pixel), kind=CLICK) == 400


@pytest.mark.parametrize(
    "url",
    ["javascript:alert(1)", "/relative", "//host/x", "ftp://h/x", "https://", "", "https://h/a b"],
)
def test_only_absolute_http_links_can_be_tracked(url: str) -> None:
    with pytest.raises(ValueError):
        signer().click_url(Link(CLICK, "t", "u", "r", 0, "v", url, NOW))


def test_a_signed_token_naming_a_bad_url_is_still_refused() -> None:
    """Defence in depth: even a MAC-valid token is never a redirect to a non-http link."""
    token = signer().token(Link(CLICK, "t", "u", "r", 0, "v", "javascript:alert(1)", NOW + DAY))
    assert refused(token) == 400


def test_the_signer_never_shows_its_key() -> None:
    assert "secret" not in repr(signer()) and SECRET.decode() not in repr(signer())


def templates(source: str) -> Templates:
    return Templates(None, secret=b"engine", inline={"m.j2": source}, links=signer())


def test_track_link_in_a_template_signs_the_send_it_renders_for() -> None:
    out = templates('Back: {{ track_link("https://shop.example/cart") }} {{ track_open() }}')
    text = out.render("m.j2", SAMPLE_CONTEXT)
    click_url, pixel_url = text.split()[1:]
    link = signer().verify(token_of(click_url), CLICK, NOW)
    fired = 1_714_566_600_000  # SAMPLE_CONTEXT's fired_at, 12:30Z
    assert link == Link(
        CLICK, "trg_sample", "user-sample-1", "sample_rule", 0, "default",
        "https://shop.example/cart", fired + DAY,
    )  # fmt: skip
    assert signer().verify(token_of(pixel_url), OPEN, NOW).trigger_id == "trg_sample"
    assert out.render("m.j2", SAMPLE_CONTEXT) == text  # the same send, the same links


def test_track_link_of_a_bad_url_is_a_template_error() -> None:
    with pytest.raises(TemplateError, match="absolute http"):
        templates('{{ track_link("javascript:alert(1)") }}').check("m.j2")
