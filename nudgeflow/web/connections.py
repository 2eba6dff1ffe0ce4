"""Connection caps for the worker's web server: slow and many clients (issue 21.3).

Found: 500 connections that sent a header line every 5 s stayed open for good, and
under `ulimit -n 1024` 1,100 of them left no descriptor for `/health`, `POST /events`
or the webhook client. What holds now:

- Deadlines. aiohttp's own keep-alive timeout (`http_idle_timeout_s`) closes a
  connection that has not completed a request's headers within it, counted from the
  connect or from the last response, so it is both the header deadline and the idle
  timeout. A body must arrive within `http_body_timeout_s` (web/ingest.py, 408).
- Caps. A connection is *admitted* while its client address has fewer than
  `http_max_connections_per_client` admitted connections and the server fewer than
  `http_max_connections`. One beyond a cap is *excess*: it may ask `/health` or
  `/ready` (probes come from anywhere, often from the attacker's own address on a
  single host); any other complete request gets 503 with `Retry-After`, before
  aiohttp parses anything; and it is closed after one answer or EXCESS_GRACE_S,
  whichever is first.
- A descriptor reserve. Connections of any kind stay below a ceiling of
  RLIMIT_NOFILE - `http_fd_reserve` - ACCEPT_BATCH (asyncio accepts up to a batch of
  sockets in one loop pass before any of them reaches this guard). The kernel's listen
  queue is longer (LISTEN_BACKLOG) and holds no descriptor of ours: a flood that fills
  a short queue drops the probes' SYNs, which then wait a 1 s retransmit. At the ceiling,
  the oldest connection with no request in progress (excess ones first) is closed to
  make room; if every connection is busy the new one gets a bare 503 and is closed.
  The reserve is what Kafka, RocksDB and the webhook client (delivery/sender.py) can
  always open, whatever HTTP clients do.

The guard wraps aiohttp's protocol (`GuardedProtocol`), so it sees a connection before
aiohttp parses a byte of it; `gate` is the middleware that answers excess connections
and marks connections busy while a handler runs.
"""

from __future__ import annotations

import asyncio
import logging
import random
import resource
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Middleware

from nudgeflow.observability import metrics
from nudgeflow.web.errors import Handler, json_error

log = logging.getLogger(__name__)

PROBES = frozenset({"/health", "/ready"})
_PROBE_PATHS = frozenset(p.encode() for p in PROBES)
MAX_HEAD = 16 * 1024  # an excess connection's request head, before it is refused
ACCEPT_BATCH = 64  # sockets asyncio accepts per loop pass (taken off the fd ceiling)
LISTEN_BACKLOG = 4096  # the kernel's queue (capped by net.core.somaxconn): no fds of ours
EXCESS_GRACE_S = 1.0
RETRY_AFTER_S = "5"
MIN_CEILING = 16
_BODY = b'{"error":"too many connections","code":"too_many_connections"}'
REFUSED = (
    b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: " + RETRY_AFTER_S.encode() + b"\r\n"
    b"Content-Type: application/json\r\nConnection: close\r\n"
    b"Content-Length: " + str(len(_BODY)).encode() + b"\r\n\r\n" + _BODY
)


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    max_total: int
    max_per_client: int
    ceiling: int  # connections of any kind, from the descriptor limit
    excess_grace_s: float = EXCESS_GRACE_S


def fd_ceiling(reserve: int, backlog: int) -> tuple[int, int | None]:
    """(the most connections the server may hold, RLIMIT_NOFILE or None if unlimited)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return 1 << 20, None
    return max(MIN_CEILING, soft - reserve - backlog), soft


class Conn:
    """One accepted connection: its address, whether it is over a cap, requests in flight."""

    __slots__ = ("busy", "excess", "peer", "timer", "transport")

    def __init__(self, transport: asyncio.BaseTransport, peer: str, excess: str | None) -> None:
        self.transport = transport
        self.peer = peer
        self.excess = excess  # None, or the cap it is over: per_client / total
        self.busy = 0
        self.timer: asyncio.TimerHandle | None = None


class ConnectionGuard:
    """Counts the server's connections by address and kind; decides, evicts, expires."""

    def __init__(self, limits: ConnectionLimits) -> None:
        self.limits = limits
        self.conns: dict[asyncio.BaseTransport, Conn] = {}
        self.per_peer: dict[str, int] = {}  # admitted connections per client address
        self.admitted = 0
        # connections with no request in flight, oldest first: who is evicted at the ceiling
        self._idle_excess: dict[Conn, None] = {}
        self._idle_admitted: dict[Conn, None] = {}

    def open(self, transport: asyncio.BaseTransport) -> Conn | None:
        """Count a new connection; None: refuse it (at the ceiling, nothing to evict)."""
        if len(self.conns) >= self.limits.ceiling and not self._evict():
            metrics.http_connections_refused.labels(reason="fd_ceiling").inc()
            return None
        peer = _peer(transport)
        excess = None
        if self.per_peer.get(peer, 0) >= self.limits.max_per_client:
            excess = "per_client"
        elif self.admitted >= self.limits.max_total:
            excess = "total"
        conn = Conn(transport, peer, excess)
        self.conns[transport] = conn
        if excess is None:
            self.per_peer[peer] = self.per_peer.get(peer, 0) + 1
            self.admitted += 1
            self._idle_admitted[conn] = None
        else:
            self._idle_excess[conn] = None
            loop = asyncio.get_running_loop()
            # jittered, so a flood's excess does not come back in one burst
            grace = self.limits.excess_grace_s * random.uniform(0.5, 1.5)
            conn.timer = loop.call_later(grace, self._expire, conn)
        self._export()
        return conn

    def close(self, conn: Conn) -> None:
        """Forget a connection (closed by either side, or evicted); idempotent."""
        if self.conns.pop(conn.transport, None) is None:
            return
        if conn.timer is not None:
            conn.timer.cancel()
        self._idle_excess.pop(conn, None)
        self._idle_admitted.pop(conn, None)
        if conn.excess is None:
            self.admitted -= 1
            left = self.per_peer[conn.peer] - 1
            if left:
                self.per_peer[conn.peer] = left
            else:
                del self.per_peer[conn.peer]
        self._export()

    def started(self, transport: asyncio.BaseTransport | None) -> Conn | None:
        """A request on `transport` reached a handler: not evictable until `finished`."""
        conn = self.conns.get(transport) if transport is not None else None
        if conn is not None:
            conn.busy += 1
            self._idle_excess.pop(conn, None)
            self._idle_admitted.pop(conn, None)
        return conn

    def finished(self, conn: Conn) -> None:
        conn.busy -= 1
        if conn.busy == 0 and conn.transport in self.conns:
            idle = self._idle_admitted if conn.excess is None else self._idle_excess
            idle[conn] = None  # now the newest idle one

    def _evict(self) -> bool:
        """Close the oldest idle connection, excess ones first; False if all are busy."""
        for idle in (self._idle_excess, self._idle_admitted):
            for conn in idle:
                metrics.http_connections_refused.labels(reason="fd_ceiling").inc()
                transport = conn.transport
                if isinstance(transport, asyncio.Transport):
                    transport.abort()  # its descriptor is freed on the next loop pass
                else:
                    transport.close()
                self.close(conn)
                return True
        return False

    def _expire(self, conn: Conn) -> None:
        """An excess connection had its grace: closed unless a probe is being answered."""
        conn.timer = None
        if conn.busy == 0 and conn.transport in self.conns:
            _refuse(conn.transport)
            self.close(conn)

    def _export(self) -> None:
        metrics.http_connections.labels(kind="admitted").set(self.admitted)
        metrics.http_connections.labels(kind="excess").set(len(self.conns) - self.admitted)


def _peer(transport: asyncio.BaseTransport) -> str:
    peername = transport.get_extra_info("peername")
    if isinstance(peername, tuple) and peername:
        return str(peername[0])
    return str(peername)


class GuardedProtocol(asyncio.Protocol):
    """aiohttp's protocol behind the guard. An excess connection gets one only if its
    request line asks for a probe; any other is answered 503 here, before aiohttp
    spends a parser and a task on it (a flood's excess is mostly that)."""

    def __init__(self, make_inner: Callable[[], Any], guard: ConnectionGuard) -> None:
        self._make_inner = make_inner
        self._guard = guard
        self._conn: Conn | None = None
        self._inner: asyncio.Protocol | None = None
        self._head = b""  # an excess connection's bytes until its request line is complete

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._conn = self._guard.open(transport)
        if self._conn is None:
            _refuse(transport)
        elif self._conn.excess is None:
            self._start_inner(transport)

    def _start_inner(self, transport: asyncio.BaseTransport) -> None:
        self._inner = self._make_inner()
        self._inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self._inner is not None:
            self._inner.data_received(data)
        elif self._conn is not None and self._conn.transport in self._guard.conns:
            self._head += data
            self._decide()

    def _decide(self) -> None:
        """An excess connection's head so far: a probe gets aiohttp; a complete (or too
        long) other head gets the 503; an incomplete one waits out its grace (a slow
        client is held, not invited to reconnect at once)."""
        conn = self._conn
        assert conn is not None
        line, newline, _ = self._head.partition(b"\n")
        method, _, rest = line.partition(b" ")
        path = rest.partition(b" ")[0].partition(b"?")[0]
        if newline and method in (b"GET", b"HEAD") and path in _PROBE_PATHS:
            head, self._head = self._head, b""
            self._start_inner(conn.transport)
            self.data_received(head)
        elif b"\r\n\r\n" in self._head or len(self._head) > MAX_HEAD:
            metrics.http_connections_refused.labels(reason=conn.excess or "total").inc()
            self._head = b""
            _refuse(conn.transport)
            self._guard.close(conn)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received() if self._inner is not None else None

    def connection_lost(self, exc: Exception | None) -> None:
        if self._conn is not None:
            self._guard.close(self._conn)
        if self._inner is not None:
            self._inner.connection_lost(exc)

    def pause_writing(self) -> None:
        if self._inner is not None:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._inner is not None:
            self._inner.resume_writing()


def _refuse(transport: asyncio.BaseTransport) -> None:
    """A bare 503 + Retry-After, then close: no parser, no task, no handler."""
    if isinstance(transport, asyncio.WriteTransport):
        transport.write(REFUSED)
    transport.close()


class GuardedSite(web.TCPSite):
    """aiohttp's TCPSite, with every connection going through `GuardedProtocol`, an
    accept batch of ACCEPT_BATCH and a listen queue of LISTEN_BACKLOG."""

    def __init__(
        self, runner: web.BaseRunner, host: str, port: int, guard: ConnectionGuard
    ) -> None:
        super().__init__(runner, host, port, backlog=ACCEPT_BATCH)
        self.guard = guard

    async def start(self) -> None:
        await web.BaseSite.start(self)
        server = self._runner.server
        assert server is not None
        guard = self.guard
        self._server = await asyncio.get_running_loop().create_server(
            lambda: GuardedProtocol(server, guard),
            self._host,
            self._port,
            backlog=self._backlog,
            reuse_address=self._reuse_address,
            reuse_port=self._reuse_port,
        )
        for sock in self._server.sockets:  # asyncio listened with the batch size
            with sock.dup() as listening:
                listening.listen(LISTEN_BACKLOG)


def gate(guard: ConnectionGuard) -> Middleware:
    """Middleware: excess connections get the probes or a 503; busy while handled."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        conn = guard.started(request.transport)
        if conn is None:
            return await handler(request)  # not a guarded connection (an in-process test)
        try:
            if conn.excess is not None and request.path not in PROBES:
                metrics.http_connections_refused.labels(reason=conn.excess).inc()
                refused = json_error(
                    503,
                    "too many connections from your address or in total; retry later",
                    code="too_many_connections",
                    headers={"Retry-After": RETRY_AFTER_S},
                )
                refused.force_close()
                return refused
            response = await handler(request)
            if conn.excess is not None:
                response.force_close()
            return response
        finally:
            guard.finished(conn)

    return middleware
