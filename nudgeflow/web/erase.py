"""DELETE /users/<id>: erase a user (issue 19.3; tables/erasure.py says how).

Routed like GET /users/<id> (web/users.py): a worker that does not own the user's
partition forwards the request, by the encoded id (web/paths.py), to the one that does.
The owner answers 404 when it has nothing of the user (unknown, or erased already: a
second DELETE is a no-op), else puts the erase request on `events.by-user` in the user's
partition, so the evaluate agent applies it in order with the user's events, and waits
until the user's state and timeline are gone from its tables (their tombstones are then
acknowledged in the changelogs): 204. If that takes longer than ERASE_WAIT_S (a busy
partition), 202: the request is stored and will be applied. Kafka unavailable: 503.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from aiohttp import web

from nudgeflow.agents.erase import send_request
from nudgeflow.agents.router import partition_for
from nudgeflow.observability.clock import now_ms
from nudgeflow.tables import erasure
from nudgeflow.web.auth import require_token
from nudgeflow.web.errors import json_error
from nudgeflow.web.users import UserViews, known

if TYPE_CHECKING:
    from nudgeflow.pipeline.runtime import Runtime

log = logging.getLogger(__name__)

ERASE_WAIT_S = 10.0
SEND_TIMEOUT_S = 10.0
_POLL_S = 0.05


class Erasures:
    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.views = UserViews(rt)

    def present(self, user_id: str, partition: int) -> bool:
        return known(self.views.local(user_id, partition))

    async def delete_user(self, request: web.Request) -> web.StreamResponse:
        user_id = request.match_info["user_id"]
        partition = partition_for(user_id.encode(), self.rt.partitions)
        routed = await self.views.elsewhere(request, user_id, partition)
        if routed is not None:
            return routed
        if not self.present(user_id, partition):
            return json_error(404, f"no state for user {user_id!r}", code="unknown_user")
        try:
            await asyncio.wait_for(self._request(user_id), SEND_TIMEOUT_S)
        except Exception as exc:  # aiokafka/faust producer errors, the timeout
            log.warning("DELETE /users: the erase request was not stored: %r", exc)
            return json_error(
                503,
                "the erase request could not be stored (Kafka unavailable); retry",
                code="unavailable",
                headers={"Retry-After": "2"},
            )
        deadline = time.monotonic() + ERASE_WAIT_S
        while self.present(user_id, partition):
            if time.monotonic() > deadline:
                return web.json_response({"user_id": user_id, "status": "queued"}, status=202)
            await asyncio.sleep(_POLL_S)
        return web.Response(status=204)

    async def _request(self, user_id: str) -> None:
        await (await send_request(self.rt, user_id.encode(), erasure.encode_request(now_ms())))


def add_erase_routes(app: web.Application, rt: Runtime, token: str | None) -> None:
    app.router.add_delete("/users/{user_id}", require_token(token)(Erasures(rt).delete_user))
