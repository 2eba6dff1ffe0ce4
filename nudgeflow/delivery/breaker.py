"""Per-destination circuit breaker.

After `failures` consecutive failed attempts a destination's circuit opens:
its deliveries go straight to the retry topic without a call, so a dead
endpoint costs no timeouts. After `reset_s` one probe is let through
(half-open); its success closes the circuit, its failure re-opens it.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from nudgeflow.observability import metrics


class State(enum.IntEnum):
    CLOSED = 0
    HALF_OPEN = 1
    OPEN = 2


@dataclass
class CircuitBreaker:
    name: str
    failures: int
    reset_s: float
    clock: Callable[[], float] = time.monotonic
    state: State = State.CLOSED
    _consecutive: int = 0
    _opened_at: float = 0.0
    _probe_started: float | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self._publish()

    def _publish(self) -> None:
        metrics.circuit_state.labels(destination=self.name).set(int(self.state))

    def allow(self) -> bool:
        """May an attempt go out now? In half-open, only one probe at a time."""
        now = self.clock()
        if self.state is State.CLOSED:
            return True
        if self.state is State.OPEN:
            if now - self._opened_at < self.reset_s:
                return False
            self.state = State.HALF_OPEN
            self._publish()
        # Half-open: one probe; a probe that never reported back frees the slot.
        if self._probe_started is None or now - self._probe_started >= self.reset_s:
            self._probe_started = now
            return True
        return False

    def record_success(self) -> None:
        self._consecutive = 0
        self._probe_started = None
        if self.state is not State.CLOSED:
            self.state = State.CLOSED
            self._publish()

    def record_failure(self) -> None:
        self._consecutive += 1
        self._probe_started = None
        if self.state is State.HALF_OPEN or self._consecutive >= self.failures:
            if self.state is not State.OPEN:
                self.state = State.OPEN
                self._publish()
            self._opened_at = self.clock()


@dataclass
class Breakers:
    """One breaker per destination name, created on first use."""

    failures: int
    reset_s: float
    clock: Callable[[], float] = time.monotonic
    _by_name: dict[str, CircuitBreaker] = field(default_factory=dict)

    def __getitem__(self, name: str) -> CircuitBreaker:
        breaker = self._by_name.get(name)
        if breaker is None:
            breaker = CircuitBreaker(name, self.failures, self.reset_s, self.clock)
            self._by_name[name] = breaker
        return breaker
