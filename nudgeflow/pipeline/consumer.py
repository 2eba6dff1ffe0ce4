"""Faust's consumer, except that it never steps over records it did not hand out.

Invariants:
* A jump in a partition's offsets on a topic that can have no gaps (anything but a
  table changelog: ours are neither compacted nor transactional) is not committed
  past: the partition seeks back to the last offset read and the fetcher reads the
  skipped records again. At worst a record is handed out twice, which at-least-once
  processing allows (the engine drops a repeated event; the deliver agent, a repeated
  trigger). Records that retention deleted are a real gap and Faust's handling applies.
* A fetch of idle partitions is held by the broker at most `FETCH_MAX_WAIT_MS`, not
  Faust's hard-coded 1.5 s, so a busy partition's next records never wait behind it.

The method below is faust-streaming 0.15's `_drain_messages` (pyproject.toml pins the
minor version) with only the gap branch changed. Why each exists, with the lost
triggers and the held events that found them: docs/reliability.md ("Records Faust's
consumer stepped over after a restart") and docs/performance.md ("Consumer").
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, cast

import faust
from aiokafka import AIOKafkaConsumer
from faust.transport.consumer import CONSUMER_FETCHING
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP
from faust.types.transports import TransportT
from mode import Service, ServiceT

from nudgeflow.observability import metrics

log = logging.getLogger(__name__)

MAX_SEEKS = 20  # per jump: a fetch that keeps starting past the seek is a real gap
# The most an event can wait behind a held fetch of idle partitions (see above); an
# idle worker sends ~1000 / FETCH_MAX_WAIT_MS fetches a second, ~5% of a core at 50.
FETCH_MAX_WAIT_MS = 50


class _ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    """Faust's consumer thread with the fetch wait above."""

    def _create_worker_consumer(self, transport: Any) -> AIOKafkaConsumer:
        consumer = super()._create_worker_consumer(transport)
        consumer._fetch_max_wait_ms = FETCH_MAX_WAIT_MS  # start() hands it to the fetcher
        return consumer


class GaplessConsumer(faust_aiokafka.Consumer):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # tp -> (offset sought back to, highest stale offset dropped since, seeks)
        self._rewound: dict[TP, tuple[int, int, int]] = {}

    def _new_consumer_thread(self) -> faust_aiokafka.AIOKafkaConsumerThread:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)

    async def _on_jump(self, tp: TP, r_offset: int, offset: int) -> bool:
        """True: drop this record (it is read again later); False: a real gap."""
        if self._is_changelog_tp(tp):  # compacted: gaps are real
            return False
        to, last, seeks = self._rewound.get(tp, (r_offset, -1, 0))
        if offset > last and seeks:  # the rest of a batch fetched before the seek
            self._rewound[tp] = (to, offset, seeks)
            return True
        if seeks >= MAX_SEEKS or not await self._still_there(tp, to):
            log.error("%s[%d]: records from %d are gone; skipping to %d", *tp, to, offset)
            self._rewound.pop(tp, None)
            return False
        metrics.consumer_rewinds.labels(topic=tp.topic).inc()
        log.warning("%s[%d]: offset %d came after %d; reading again", *tp, offset, to)
        self._rewound[tp] = (to, offset, seeks + 1)
        await self.seek(tp, to)
        return True

    async def _still_there(self, tp: TP, offset: int) -> bool:
        """Whether retention has kept the record after `offset` (a broker request)."""
        try:
            earliest = (await self.earliest_offsets(tp)).get(tp, 0)
        except Exception:  # the broker may be gone: assume the records are kept
            return True
        return earliest <= offset + 1

    async def _drain_messages(self, fetcher: ServiceT) -> None:
        callback = self.callback
        getmany = self.getmany
        consumer_should_stop = cast(Service, self)._stopped.is_set
        fetcher_should_stop = cast(Service, fetcher)._stopped.is_set

        get_read_offset = self._read_offset.__getitem__
        set_read_offset = self._read_offset.__setitem__
        set_flag = self.diag.set_flag
        unset_flag = self.diag.unset_flag
        commit_every = self._commit_every
        acks_enabled_for = self.app.topics.acks_enabled_for
        rewound = self._rewound

        yield_every = 100
        num_since_yield = 0
        sleep = asyncio.sleep

        try:
            while not (consumer_should_stop() or fetcher_should_stop()):
                set_flag(CONSUMER_FETCHING)
                ait = cast(Any, getmany(timeout=1.0))
                await self.sleep(0)
                if not self.should_stop:
                    async for tp, message in ait:
                        num_since_yield += 1
                        if num_since_yield > yield_every:
                            await sleep(0)
                            num_since_yield = 0

                        offset = message.offset
                        r_offset = get_read_offset(tp)
                        if r_offset is None or offset >= r_offset:
                            gap = offset - (r_offset or 0)
                            if gap > 1 and r_offset and acks_enabled_for(message.topic):
                                # `r_offset` is the last record read or, right after a
                                # seek, the next one to read: read again from it.
                                if await self._on_jump(tp, r_offset, offset):
                                    continue
                                await self._add_gap(tp, r_offset + 1, offset)
                            elif rewound:
                                rewound.pop(tp, None)
                            if commit_every is not None and self._n_acked >= commit_every:
                                self._n_acked = 0
                                await self.commit()
                            await self.wait_first(callback(message), self.suspend_flow.wait())
                            set_read_offset(tp, offset)
                    unset_flag(CONSUMER_FETCHING)

        except self.consumer_stopped_errors:
            if self.transport.app.should_stop:
                self.log.info("Broker stopped consumer, shutting down...")
                return
            raise
        except asyncio.CancelledError:
            if self.transport.app.should_stop:
                self.log.info("Consumer shutting down for user cancel.")
                return
            raise
        except Exception as exc:
            self.log.exception("Drain messages raised: %r", exc)
            raise
        finally:
            unset_flag(CONSUMER_FETCHING)


class GaplessTransport(faust_aiokafka.Transport):
    Consumer = GaplessConsumer


class App(faust.App):
    """faust.App on the aiokafka transport with the consumer above."""

    def _new_transport(self) -> TransportT:
        return GaplessTransport(self.conf.broker_consumer, self)
