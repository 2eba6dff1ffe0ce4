"""`socket.accept() out of system resource`, logged a few times, not per attempt.

Found: under `ulimit -n 1024` and a connection flood, asyncio logged 225,231 such
tracebacks (108 MB) in 90 s: on Python 3.11 its accept loop goes on after EMFILE and
reports every further attempt to the loop's exception handler. This handler counts
each one (`nudgeflow_http_accept_errors_total`) and logs one line per EVERY_S with the
count since the last line; every other exception goes to the handler that was there
before (or asyncio's default). The connection ceiling (web/connections.py) keeps the
server's own connections from exhausting descriptors; this covers whatever else does.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from nudgeflow.observability import metrics

log = logging.getLogger(__name__)

MESSAGE = "socket.accept() out of system resource"
EVERY_S = 10.0

ExceptionHandler = Callable[[asyncio.AbstractEventLoop, dict[str, Any]], object]


class AcceptErrorLog:
    def __init__(self, every_s: float = EVERY_S, clock: Callable[[], float] = time.monotonic):
        self.every_s = every_s
        self.clock = clock
        self.unlogged = 0
        self.next_at = 0.0
        self.previous: ExceptionHandler | None = None

    def install(self, loop: asyncio.AbstractEventLoop) -> None:
        self.previous = loop.get_exception_handler()
        loop.set_exception_handler(self)

    def uninstall(self, loop: asyncio.AbstractEventLoop) -> None:
        if loop.get_exception_handler() is self:
            loop.set_exception_handler(self.previous)

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if context.get("message") != MESSAGE:
            if self.previous is not None:
                self.previous(loop, context)
            else:
                loop.default_exception_handler(context)
            return
        metrics.http_accept_errors.inc()
        self.unlogged += 1
        now = self.clock()
        if now < self.next_at:
            return
        exc = context.get("exception")
        log.warning(
            "%s (%s): %d time(s) since the last such line; this line repeats at most every %.0f s",
            MESSAGE,
            exc if exc is not None else "no detail",
            self.unlogged,
            self.every_s,
        )
        self.unlogged = 0
        self.next_at = now + self.every_s
