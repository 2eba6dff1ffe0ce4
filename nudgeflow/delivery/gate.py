"""The way out to one destination: its breaker, its concurrency and its rate, in one place.

A delivery asks `enter()` for a `Pass` before it calls. The gate says no (None) when
the circuit is open and the caller would rather park the delivery in Kafka than wait
(`park=True`, new triggers and due retries); otherwise it waits, in order of arrival,
for a free slot, and in half-open hands out the single probe. Slots are this worker's
share of the destination's `concurrency` (delivery/share.py), narrowed while the
breaker ramps up after a recovery. `pace()` then spaces calls at the worker's share
of `rate_limit` with aiolimiter (a bucket of one: no burst, so a receiver sees the
configured rate over any window). Only holders of a pass wait at the pacer, so a
re-share (a new limiter) leaves at most `concurrency` calls at the old rate.

Every pass is finished exactly once with `done(ok)`, `ok=None` when no call was made;
the breaker learns only from calls that were made.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable

from aiolimiter import AsyncLimiter

from nudgeflow.config.destinations import Destination, rate_per_s
from nudgeflow.delivery.breaker import Admission, BreakerPolicy, CircuitBreaker, State
from nudgeflow.delivery.share import Share


class Pass:
    """Leave to make one call (holds one of the destination's slots until `done`)."""

    __slots__ = ("_gate", "finished", "probe")

    def __init__(self, gate: Gate, probe: bool = False) -> None:
        self._gate = gate
        self.probe = probe
        self.finished = False

    def done(self, ok: bool | None) -> None:
        """The call succeeded, failed, or (None) was never made."""
        self._gate._finish(self, ok)

    @property
    def valid(self) -> bool:
        """Still worth calling: the probe, or the circuit is still closed."""
        return self.probe or self._gate.breaker.state is State.CLOSED


def _pacer(dest: Destination, share: Share) -> AsyncLimiter | None:
    if not dest.rate_limit:
        return None
    count, period = rate_per_s(dest.rate_limit)
    return AsyncLimiter(1, 1.0 / share.rate(count / period))


class Gate:
    def __init__(
        self,
        name: str,
        dest: Destination,
        policy: BreakerPolicy,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.dest = dest
        self.breaker = CircuitBreaker(name, policy, clock)
        self.share = Share.whole(1)
        self.in_use = 0
        self._pacer = _pacer(dest, self.share)
        self._waiters: deque[asyncio.Future[bool]] = deque()  # True: a slot was handed over
        self._changed: asyncio.Event | None = None

    @property
    def limit(self) -> int:
        """Concurrent calls allowed now: the worker's share, or less while ramping up."""
        base = self.share.concurrency(self.dest.concurrency)
        ramp = self.breaker.ramp
        return base if ramp is None else min(base, ramp)

    @property
    def rate_per_s(self) -> float | None:
        if not self.dest.rate_limit:
            return None
        count, period = rate_per_s(self.dest.rate_limit)
        return self.share.rate(count / period)

    def reshare(self, share: Share) -> None:
        """Take this worker's new share of the limits (after a rebalance)."""
        if share != self.share:
            self.share = share
            self._pacer = _pacer(self.dest, share)
            self._wake_slots()

    async def enter(self, *, park: bool) -> Pass | None:
        """A pass; or None when the circuit is open (or the probe is out) and `park`."""
        while True:
            admission = self.breaker.admit()
            if admission is Admission.PROBE:
                self.in_use += 1
                return Pass(self, probe=True)
            if admission is Admission.WAIT:
                if park:
                    return None
                await self._state_change(self.breaker.retry_in())
                continue
            if self.in_use < self.limit and not self._waiters:
                self.in_use += 1
                return Pass(self)
            if await self._slot():
                if self.breaker.state is State.CLOSED:
                    return Pass(self)
                self._release()  # handed over just before the circuit opened: look again

    async def pace(self) -> None:
        """Wait for the rate limit (hold a pass while waiting)."""
        pacer = self._pacer
        if pacer is not None:
            await pacer.acquire()

    async def _slot(self) -> bool:
        """Wait for a free slot (True, then it is ours) or a state change (False)."""
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._waiters.append(future)
        try:
            return await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled() and future.result():
                self._release()
            with contextlib.suppress(ValueError):
                self._waiters.remove(future)
            raise

    async def _state_change(self, timeout: float | None) -> None:
        if self._changed is None:
            self._changed = asyncio.Event()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._changed.wait(), timeout)

    def _finish(self, p: Pass, ok: bool | None) -> None:
        if p.finished:
            return
        p.finished = True
        before = (self.breaker.state, self.breaker.ramp)
        if ok is not None:
            self.breaker.record(ok, probe=p.probe)
        elif p.probe:
            self.breaker.drop_probe()
        self._release()
        if p.probe or (self.breaker.state, self.breaker.ramp) != before:
            self._broadcast()

    def _release(self) -> None:
        self.in_use -= 1
        self._wake_slots()

    def _wake_slots(self) -> None:
        while self._waiters and self.in_use < self.limit:
            future = self._waiters.popleft()
            if not future.done():
                self.in_use += 1
                future.set_result(True)

    def _broadcast(self) -> None:
        """The breaker changed: slot waiters look again (they may park now), and so do
        callers waiting for the circuit."""
        if self.breaker.state is not State.CLOSED:
            while self._waiters:
                future = self._waiters.popleft()
                if not future.done():
                    future.set_result(False)
        if self._changed is not None:
            self._changed.set()
            self._changed = None
