"""Sample traffic for `nudgeflow dev`: a cast of users that makes every default rule fire.

Every cycle invents fresh users and walks each through one story, posting the
events to the worker's own HTTP API exactly as a shop would:

* ana_N adds $120 to her cart and leaves          -> abandoned_cart, and the
                                                     cart_recovery journey: a reminder,
                                                     a second message (over $100), a
                                                     last one at her best hour
* fay_N adds $80 and clicks the reminder          -> cart_recovery's click branch:
                                                     its last call (she did not buy)
* ben_N views three products and buys nothing     -> browse_abandonment
* cleo_N logs in once and never comes back        -> re_engagement
* dan_N signs up                                  -> welcome_series (two steps)
* eve_N buys something                            -> post_purchase

The click is posted by the demo receiver when fay's reminder arrives (`Clicks`), as
a shop's click tracking would: a `message_clicked` naming the trigger id.
"""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any

import aiohttp
from mode import Service

log = logging.getLogger(__name__)


def story(cycle: int, now_ms: int) -> list[dict[str, Any]]:
    def ev(user: str, type_: str, offset_ms: int = 0, **props: Any) -> dict[str, Any]:
        return {
            "event_id": uuid.uuid4().hex,
            "user_id": f"{user}_{cycle}",
            "type": type_,
            "ts": now_ms + offset_ms,
            "properties": props,
            "traits": {
                "name": user.capitalize(),
                "email": f"{user}{cycle}@example.com",
                "timezone": "UTC",
            },
        }

    return [
        ev(
            "ana",
            "cart_add",
            product_id="sku-1",
            product_name="Trail shoes",
            price=120.0,
            quantity=1,
            currency="USD",
        ),
        ev(
            "fay",
            "cart_add",
            product_id="sku-6",
            product_name="Yoga mat",
            price=80.0,
            quantity=1,
            currency="USD",
        ),
        ev("ben", "product_view", 0, product_id="sku-2", product_name="Rain jacket"),
        ev("ben", "product_view", 1, product_id="sku-3", product_name="Wool socks"),
        ev("ben", "product_view", 2, product_id="sku-4", product_name="Headlamp"),
        ev("cleo", "login"),
        ev("dan", "signup"),
        ev(
            "eve",
            "purchase",
            product_id="sku-5",
            product_name="Tent",
            price=300.0,
            cart_value=300.0,
            currency="USD",
        ),
    ]


def click_for(payload: dict[str, Any], now_ms: int) -> dict[str, Any] | None:
    """The click fay_N makes on her first cart_recovery message (None for any other)."""
    user = str(payload.get("user_id", ""))
    if payload.get("rule") != "cart_recovery" or not user.startswith("fay_"):
        return None
    if str(payload.get("step")) != "1":  # the reminder: the journey's first send
        return None
    return {
        "event_id": f"click-{payload.get('trigger_id')}",
        "user_id": user,
        "type": "message_clicked",
        "ts": now_ms,
        "properties": {"trigger_id": payload.get("trigger_id"), "rule": "cart_recovery"},
    }


class Clicks:
    """The demo receiver's stand-in for click tracking: posts `click_for` to the worker."""

    def __init__(self, events_url: str, token: str | None = None) -> None:
        self.events_url = events_url
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}

    async def __call__(self, payload: dict[str, Any]) -> None:
        click = click_for(payload, int(time.time() * 1000))
        if click is None:
            return
        try:
            async with (
                aiohttp.ClientSession() as session,
                session.post(self.events_url, json=[click], headers=self.headers) as resp,
            ):
                log.info("demo traffic: %s clicked -> %d", click["user_id"], resp.status)
        except aiohttp.ClientError as exc:
            log.info("demo traffic: click not posted (%s)", exc)


class DemoTraffic(Service):
    """Posts one story per `every_s` to the worker's /events until stopped."""

    def __init__(
        self, events_url: str, *, every_s: float = 60.0, token: str | None = None, **kwargs: Any
    ) -> None:
        self.events_url = events_url
        self.every_s = every_s
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}
        super().__init__(**kwargs)

    async def _until_ready(self, session: aiohttp.ClientSession) -> None:
        """Post nothing before the worker says it is ready (partitions assigned, tables
        recovered): a first cycle posted into a start-up would only get 503s."""
        ready_url = self.events_url.rsplit("/", 1)[0] + "/ready"
        while not self.should_stop:
            try:
                async with session.get(ready_url) as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientError:
                pass  # the web server is not listening yet
            await self.sleep(0.5)

    @Service.task
    async def _cycle(self) -> None:
        cycle = 0
        async with aiohttp.ClientSession() as session:
            await self._until_ready(session)
            while not self.should_stop:
                events = story(cycle, int(time.time() * 1000))
                try:
                    async with session.post(
                        self.events_url, json=events, headers=self.headers
                    ) as resp:
                        body = await resp.text()
                        log.info(
                            "demo traffic: cycle %d posted %d events -> %d %s",
                            cycle,
                            len(events),
                            resp.status,
                            body,
                        )
                except aiohttp.ClientError as exc:
                    log.info("demo traffic: worker not reachable yet (%s)", exc)
                cycle += 1
                await self.sleep(self.every_s)
