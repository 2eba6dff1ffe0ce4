"""Identity merge on the real broker (issue 19.2): a guest's cart follows them into their
account across workers, once, also through a kill -9; bad input loses nothing.

Each test uses fresh ids: the anonymous and the known id hash to partitions owned by
different workers. "Exactly one" is checked without sleeping: sentinel carts, added in
both partitions after the identify, come due after the guest's reminder would have, and
each partition fires its timers in deadline order, so once both sentinels have arrived,
a second reminder (to either id) would have arrived too.
"""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid
from typing import Any

import aiohttp
import msgspec
import pytest

from tests.fixtures.kafka import consume_all
from tests.fixtures.receivers import Receiver
from tests.integration.identity.conftest import (
    Pair,
    deliveries,
    get_user,
    post,
    split,
    wait_delivered,
    wait_user,
)

pytestmark = pytest.mark.kafka


def _cart_add(user: str, price: float = 120, name: str = "Boots") -> dict[str, Any]:
    return {
        "anonymousId": user,
        "event": "Product Added",
        "messageId": uuid.uuid4().hex,
        "properties": {"product_id": name.lower(), "name": name, "price": price, "quantity": 1},
    }


def _identify(anon: str, known: str, email: str) -> dict[str, Any]:
    return {
        "anonymousId": anon,
        "userId": known,
        "messageId": uuid.uuid4().hex,
        "traits": {"email": email},
    }


async def _sentinels(pair: Pair, anon: str, known: str, tag: str) -> list[str]:
    """A later cart in each of the two partitions (see the module docstring)."""
    users = [pair.neighbour(anon, f"{tag}a"), pair.neighbour(known, f"{tag}k")]
    for user in users:
        status, body = await post(pair.first, "/v1/track", _cart_add(user, 1, "Pin"))
        assert status == 202, body
    return users


async def _exactly_one_reminder(
    pair: Pair, hook: Receiver, anon: str, known: str, email: str, tag: str
) -> None:
    sentinels = await _sentinels(pair, anon, known, tag)
    [reminder] = await wait_delivered(hook, known)
    for user in sentinels:
        await wait_delivered(hook, user)
    assert deliveries(hook, known) == [reminder]
    assert deliveries(hook, anon) == []
    assert (reminder["rule"], reminder["user_id"]) == ("abandoned_cart", known)
    assert reminder["user_email"] == email  # the identify's trait, on the known user
    assert reminder["cart_value"] == 120  # the guest's cart
    assert reminder["cart_first_item_name"] == "Boots"


async def test_a_guest_cart_follows_the_identify_to_the_other_worker(
    pair: Pair, hook: Receiver
) -> None:
    anon, known = pair.ids("merge")
    assert pair.owner(anon) is not pair.owner(known)
    status, body = await post(pair.owner(anon), "/v1/track", _cart_add(anon))
    assert status == 202, body
    status, body = await post(pair.owner(known), "/v1/identify", _identify(anon, known, "k@x.io"))
    assert (status, body["accepted"]) == (202, 2), body  # the identify and the merge request
    await _exactly_one_reminder(pair, hook, anon, known, "k@x.io", "merge")
    _, guest = await get_user(pair.first, anon)
    assert (guest["merged_into"], guest["cart"]["items"], guest["armed"]) == (known, [], [])
    _, account = await get_user(pair.second, known)
    assert account["absorbed"] == [anon] and account["profile"]["email"] == "k@x.io"
    # A later event under the guest id is applied to the account (re-routed).
    status, _ = await post(pair.first, "/v1/track", {**_cart_add(anon, 30, "Socks")})
    assert status == 202
    names = {"Boots", "Socks"}
    await wait_user(
        pair.first, known, lambda b: {i["product_name"] for i in b["cart"]["items"]} == names
    )


async def test_bad_input_a_loop_a_self_alias_and_a_deep_chain_lose_nothing(
    pair: Pair, hook: Receiver
) -> None:
    a, b = pair.ids("loop")
    status, _ = await post(pair.first, "/v1/track", _cart_add(a))
    assert status == 202
    await wait_user(pair.first, a, lambda body: body["armed"])
    status, body = await post(pair.first, "/v1/alias", {"previousId": a, "userId": b})
    assert (status, body["accepted"]) == (202, 1)
    await wait_user(pair.first, b, lambda body: body["absorbed"] == [a])
    # B -> A now would close a loop: refused, and B keeps the cart.
    status, _ = await post(pair.first, "/v1/alias", {"previousId": b, "userId": a})
    assert status == 202
    # Aliasing to oneself: accepted as nothing to do.
    status, body = await post(pair.second, "/v1/alias", {"previousId": b, "userId": b})
    assert (status, body["accepted"], body["ignored"][0]["reason"]) == (202, 0, "self_alias")
    # A chain 12 ids deep (one batch; the merges land in any order): an event at the
    # far end follows at most 8 pointers, then goes to the DLQ with the reason.
    chain = [f"chain-{uuid.uuid4().hex[:6]}-{i}" for i in range(13)]
    calls = [{"type": "alias", "previousId": x, "userId": y} for x, y in itertools.pairwise(chain)]
    status, body = await post(pair.second, "/v1/batch", {"batch": calls})
    assert (status, body["accepted"]) == (202, 12), body
    for user in chain[:-1]:
        await wait_user(pair.first, user, lambda body: body["merged_into"] is not None)
    status, _ = await post(pair.first, "/v1/track", _cart_add(chain[0], 5, "Lost?"))
    assert status == 202
    status, _ = await post(pair.first, "/v1/track", _cart_add(chain[-5], 7, "Near"))
    assert status == 202
    await wait_user(pair.first, chain[-1], lambda body: body["cart"]["items"])
    [dead] = await _dead_letters(pair, chain[0])
    assert dict(dead.headers)["nudgeflow-reason"] == b"alias_chain_too_long"
    kept = msgspec.json.decode(dead.value)  # the event as the producer sent it
    assert (kept["user_id"], kept["type"], dead.key) == (chain[0], "cart_add", chain[0].encode())
    # The loop was refused: B still has A's cart, A still points to B.
    _, body_b = await get_user(pair.first, b)
    _, body_a = await get_user(pair.first, a)
    assert body_b["cart"]["items"][0]["product_name"] == "Boots" and body_a["merged_into"] == b


async def _dead_letters(pair: Pair, user: str, timeout: float = 30.0) -> list[Any]:
    """The events DLQ's records for `user`, once there is one."""
    deadline = time.monotonic() + timeout
    topic = f"{pair.first.prefix}.events.dlq"
    while True:
        dlq = await consume_all(pair.first.broker, topic, min_count=1, timeout=5)
        mine = [r for r in dlq if r.value is not None and user in r.value.decode()]
        if mine or time.monotonic() > deadline:
            return mine


async def test_kill_9_of_the_guest_owner_right_after_the_identify(
    pair: Pair, hook: Receiver
) -> None:
    anon, known = pair.ids("kill")
    victim = pair.owner(anon)
    survivor = pair.second if victim is pair.first else pair.first
    status, _ = await post(survivor, "/v1/track", _cart_add(anon))
    assert status == 202
    await wait_user(survivor, anon, lambda body: body["armed"])
    status, _ = await post(survivor, "/v1/identify", _identify(anon, known, "kill@x.io"))
    assert status == 202
    await asyncio.to_thread(victim.kill)  # while the merge is being handled, or before
    victim.start()
    await asyncio.to_thread(victim.wait_ready)
    pair.owners = await split(pair.first, pair.second)
    await _exactly_one_reminder(pair, hook, anon, known, "kill@x.io", "kill")


async def _wait_gone(pair: Pair, user: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    status = 200
    while time.monotonic() < deadline:
        status, _ = await get_user(pair.first, user)
        if status == 404:
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"{user} still answers {status} after its erasure")


async def test_erasing_the_account_erases_the_guest_pointers(pair: Pair, hook: Receiver) -> None:
    anon, known = pair.ids("erase")
    status, _ = await post(pair.owner(anon), "/v1/track", _cart_add(anon))
    assert status == 202
    status, _ = await post(pair.owner(known), "/v1/identify", _identify(anon, known, "e@x.io"))
    assert status == 202
    await wait_user(pair.first, known, lambda body: body["absorbed"] == [anon])
    async with aiohttp.ClientSession() as s, s.delete(f"{pair.first.url}/users/{known}") as r:
        assert r.status in (202, 204), await r.text()
    await _wait_gone(pair, known)
    await _wait_gone(pair, anon)  # the pointer went with the account, in its own partition
    # A later event under the guest id starts a new guest, not a copy of the account.
    status, _ = await post(pair.owner(anon), "/v1/track", _cart_add(anon, 9, "New"))
    assert status == 202
    guest = await wait_user(pair.first, anon, lambda body: body["cart"]["items"])
    assert guest["merged_into"] is None and guest["profile"].get("email") is None
    assert [i["product_name"] for i in guest["cart"]["items"]] == ["New"]
    assert (await get_user(pair.first, known))[0] == 404
