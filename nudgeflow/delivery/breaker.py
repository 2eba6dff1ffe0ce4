"""Per-destination circuit breaker: a failure ratio over a sliding window (pure, clock injected).

Convoy's model, not "N consecutive failures": the circuit opens when, within the last
`window_s`, at least `min_calls` calls were made and at least `failure_ratio` of them
failed. So one bad second on a busy endpoint does not open it, and a flaky endpoint
that answers half its calls keeps getting them.

Open: no call goes out; deliveries wait in Kafka for the probe and spend no attempt
(agents/deliver.py parks them). After `reset_s` the circuit is half-open and admits
exactly one call, the probe. Its success closes the circuit with an empty window and a
concurrency ramp of 1 that doubles with each success (so a recovering endpoint is not
hit by the whole backlog at once, and is at full speed after a few round trips); its
failure re-opens it for another `reset_s`. Outcomes of calls that started before the
circuit opened are counted in the window but change no state.
"""

from __future__ import annotations

import enum
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from nudgeflow.config.destinations import DeliverySettings
from nudgeflow.delivery.window import FailureWindow
from nudgeflow.observability import metrics

log = logging.getLogger(__name__)

RAMP_DONE = 256  # the largest `concurrency` a destination may have: the ramp is over


class State(enum.IntEnum):
    CLOSED = 0
    HALF_OPEN = 1
    OPEN = 2


class Admission(enum.Enum):
    CALL = "call"  # closed: go (within the gate's concurrency)
    PROBE = "probe"  # half-open: this call is the one probe
    WAIT = "wait"  # open, or the probe is out: wait, do not call


@dataclass(frozen=True)
class BreakerPolicy:
    window_s: float = 60.0
    min_calls: int = 10
    failure_ratio: float = 0.7
    reset_s: float = 2.0

    @classmethod
    def from_settings(cls, settings: DeliverySettings) -> BreakerPolicy:
        return cls(
            window_s=settings.breaker_window_s,
            min_calls=settings.breaker_calls,
            failure_ratio=settings.breaker_failure_ratio,
            reset_s=settings.breaker_reset_s,
        )


class CircuitBreaker:
    def __init__(
        self, name: str, policy: BreakerPolicy, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.name = name
        self.policy = policy
        self.clock = clock
        self.state = State.CLOSED
        self.window = FailureWindow(policy.window_s)
        self.ramp: int | None = None  # concurrency cap while ramping up after a recovery
        self.opened = 0  # times the circuit opened (tests, logs)
        self._opened_at = 0.0
        self._probe_out = False
        self._publish()

    def _publish(self) -> None:
        metrics.circuit_state.labels(destination=self.name).set(int(self.state))

    def _set(self, state: State) -> None:
        if state is not self.state:
            self.state = state
            self._publish()

    def admit(self) -> Admission:
        """May a call go out now? In half-open, the first asker gets the probe."""
        if self.state is State.CLOSED:
            return Admission.CALL
        if self.state is State.OPEN:
            if self.clock() - self._opened_at < self.policy.reset_s:
                return Admission.WAIT
            self._set(State.HALF_OPEN)
        if self._probe_out:
            return Admission.WAIT
        self._probe_out = True
        return Admission.PROBE

    def retry_in(self) -> float | None:
        """Seconds until `admit` may change by itself (None: only an outcome changes it)."""
        if self.state is State.OPEN:
            return max(0.0, self._opened_at + self.policy.reset_s - self.clock())
        if self.state is State.HALF_OPEN and self._probe_out:
            return None
        return 0.0

    def record(self, ok: bool, *, probe: bool = False) -> None:
        """The outcome of a call that was made (a probe's says whether to close)."""
        now = self.clock()
        self.window.record(ok, now)
        if probe:
            self._probe_out = False
            if ok:
                self.window.clear()
                self.ramp = 1
                self._set(State.CLOSED)
                log.info("circuit %s closed: the probe succeeded; ramping up", self.name)
            else:
                self._open(now)  # (no new warning: it has been open all along)
            return
        if self.state is not State.CLOSED:
            return
        if ok:
            if self.ramp is not None:
                self.ramp = None if self.ramp * 2 >= RAMP_DONE else self.ramp * 2
            return
        calls, failures = self.window.counts(now)
        if calls >= self.policy.min_calls and failures >= self.policy.failure_ratio * calls:
            self._open(now)
            log.warning(
                "circuit %s opened: %d of %d calls failed in %.0f s; deliveries wait in Kafka "
                "for a probe every %.0f s",
                self.name,
                failures,
                calls,
                self.policy.window_s,
                self.policy.reset_s,
            )

    def drop_probe(self) -> None:
        """The probe was admitted but made no call: the next asker gets it."""
        self._probe_out = False

    def _open(self, now: float) -> None:
        self._opened_at = now
        self.ramp = None
        self.opened += 1
        self._set(State.OPEN)

    def failure_ratio(self) -> float:
        return self.window.ratio(self.clock())
