"""Shared parts of the fault tests: the workload, its expected triggers, the tally.

Every scenario runs the same small rule set against real worker processes, a
real broker and real aiohttp receivers, and checks the receivers against the
backtest of the very events it produced. The workload is built so that the
live engine and the backtest cannot disagree whatever the crash timing: every
user gets at most one event per rule, events carry the wall-clock time they
were produced (or a fixed offset from it), and no event is activity for another
rule. So the expected set
of trigger ids is exact, and "delivered", "lost" and "duplicates" are counts,
not estimates.

Sizes grow with NUDGEFLOW_SLOW=1 (the figures quoted in docs/reliability.md).
"""

from __future__ import annotations

import asyncio
import collections
import json
import os
import time
import uuid
import zlib
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import pytest
import yaml
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.coordinator.protocol import ConsumerProtocolMemberAssignment

from nudgeflow.agents.router import partition_for
from nudgeflow.backtest.file import backtest_file
from nudgeflow.config.build import build_engine, engine_secret
from nudgeflow.config.loader import load_config
from nudgeflow.kafka.broker import LocalKafka
from tests.fixtures.kafka import Record, consume_all, produce
from tests.fixtures.receivers import Receiver
from tests.fixtures.workers import ARTIFACTS, WorkerProcess

SLOW = os.environ.get("NUDGEFLOW_SLOW") == "1"
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
PARTITIONS = 4
DAY_MS = 86_400_000

# The rules every scenario runs: an immediate rule, an inactivity timer, and a
# two-step series (one immediate step, one delayed), each armed by its own event type.
KINDS = ("ping", "arm", "signup")


def fault_config(
    path: Path,
    destinations: Mapping[str, str],
    *,
    inactivity: str = "4s",
    series_delay: str = "3s",
    retry_schedule: Sequence[str] = ("1s", "2s", "5s", "10s", "20s", "30s"),
    timeout_s: float = 5.0,
) -> Path:
    """Write a nudgeflow.yaml for the fault tests; every rule goes to every destination."""
    doc: dict[str, Any] = {
        "destinations": {
            name: {"url": url, "secret": SECRET, "allow_private": True, "timeout": timeout_s}
            for name, url in destinations.items()
        },
        "delivery": {
            "retry_schedule": list(retry_schedule),
            "breaker_failures": 5,
            "breaker_reset": "2s",
        },
        "templates": {"hello.j2": "Hello {{ user.name | default('there') }}"},
        "rules": [
            {"name": "instant", "trigger": "ping", "template": "hello.j2"},
            {
                "name": "nudge",
                "trigger": "arm",
                "inactivity": inactivity,
                "activity": ["arm"],
                "template": "hello.j2",
            },
            {
                "name": "series",
                "trigger": "signup",
                "steps": [
                    {"delay": "0s", "template": "hello.j2"},
                    {"delay": series_delay, "template": "hello.j2"},
                ],
            },
        ],
    }
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


# -- the workload -------------------------------------------------------------------------


def names(scenario: str) -> dict[str, str]:
    """Topic prefix and app id for one scenario run, recognisable in test-artifacts/."""
    tag = f"fault-{scenario}-{uuid.uuid4().hex[:6]}"
    return {"prefix": tag, "app_id": tag}


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def user_events(user_id: str, kinds: Iterable[str], ts_ms: int) -> list[dict[str, Any]]:
    """One event per kind for one user, at `ts_ms` (one event per rule: no ambiguity)."""
    return [
        {
            "event_id": f"{kind}-{user_id}",
            "user_id": user_id,
            "type": kind,
            "ts": ts_ms,
            "traits": {"name": f"User {user_id}"},
        }
        for kind in kinds
    ]


@dataclass
class Workload:
    """Events produced so far (in production order), for the backtest."""

    run: str = field(default_factory=lambda: uuid.uuid4().hex[:6])
    events: list[dict[str, Any]] = field(default_factory=list)

    def user(self, n: int) -> str:
        return f"{self.run}-u{n}"

    def wave(
        self,
        users: Iterable[int],
        kinds: Callable[[int], Sequence[str]] = lambda n: KINDS,
        offset_ms: Callable[[int], int] = lambda n: 0,
    ) -> list[dict[str, Any]]:
        """Events for `users`, stamped now (+ a per-user offset); kept for the backtest."""
        ts = now_ms()
        batch = [e for n in users for e in user_events(self.user(n), kinds(n), ts + offset_ms(n))]
        self.events.extend(batch)
        return batch


def kind_of(n: int) -> tuple[str, ...]:
    """Which events user n gets: everyone arms a timer; every 10th also fires an immediate
    rule, every 20th starts a series (one step at once, one delayed)."""
    return ("arm", *(("ping",) if n % 10 == 0 else ()), *(("signup",) if n % 20 == 1 else ()))


def as_records(events: Iterable[Mapping[str, Any]]) -> list[Record]:
    return [Record(value=json.dumps(e).encode(), key=str(e["user_id"]).encode()) for e in events]


async def produce_events(bootstrap: str, topic: str, events: Sequence[Mapping[str, Any]]) -> None:
    """Write raw events straight to `<prefix>.events`, keyed by user (as a producer would)."""
    await produce(bootstrap, topic, as_records(events))


def expected_triggers(
    config: Path, events: Sequence[Mapping[str, Any]], workdir: Path
) -> dict[str, tuple[str, str, int]]:
    """trigger_id -> (rule, user, step) that the backtest fires on `events` (sent ones only).

    The clock runs a day past the last event, so every armed timer fires.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    source = workdir / "events.jsonl"
    out = workdir / "expected-triggers.jsonl"
    source.write_bytes(b"".join(msgspec.json.encode(e) + b"\n" for e in events))
    engine = build_engine(load_config(config), secret=engine_secret())
    last = max(int(e["ts"]) for e in events)
    summary = backtest_file(engine, source, until_ms=last + DAY_MS, out=out)
    assert summary["rejected"] == 0, summary["rejected_samples"]
    expected: dict[str, tuple[str, str, int]] = {}
    for line in out.read_bytes().splitlines():
        t = msgspec.json.decode(line)
        if t["send"]:
            expected[t["trigger_id"]] = (t["rule"], t["user_id"], t["step"])
    return expected


# -- the tally ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Tally:
    """What a receiver got, against what the backtest says it should get."""

    expected: int
    delivered: int  # distinct expected ids that arrived
    duplicates: int  # requests beyond the first for an id
    lost: int  # expected ids that never arrived
    unexpected: int  # ids that arrived but the backtest never fired
    requests: int

    @classmethod
    def of(cls, receiver: Receiver, expected: Iterable[str], *, ok_only: bool = True) -> Tally:
        wanted = set(expected)
        ids = [i for i in receiver.ids(200 if ok_only else None) if i is not None]
        counts = collections.Counter(ids)
        got = set(counts)
        return cls(
            expected=len(wanted),
            delivered=len(wanted & got),
            duplicates=sum(c - 1 for c in counts.values()),
            lost=len(wanted - got),
            unexpected=len(got - wanted),
            requests=len(ids),
        )

    def line(self) -> str:
        return (
            f"expected={self.expected} delivered={self.delivered} "
            f"duplicates={self.duplicates} lost={self.lost} unexpected={self.unexpected}"
        )


def lost_triggers(
    receiver: Receiver, expected: Mapping[str, tuple[str, str, int]], limit: int = 50
) -> list[list[Any]]:
    """[trigger id, rule, user, step] of expected triggers that never arrived: what to trace
    in the worker logs and topics when a fault test loses one."""
    got = {i for i in receiver.ids(200) if i is not None}
    return [[i, *expected[i]] for i in sorted(set(expected) - got)[:limit]]


def duplicated_ids(receiver: Receiver) -> dict[str, int]:
    counts = collections.Counter(i for i in receiver.ids(200) if i is not None)
    return {i: c for i, c in counts.items() if c > 1}


def first_arrivals(receiver: Receiver) -> dict[str, float]:
    """webhook-id -> when (monotonic) its first 2xx copy arrived."""
    out: dict[str, float] = {}
    for r in receiver.requests:
        if r.status == 200 and r.webhook_id is not None:
            out.setdefault(r.webhook_id, r.at)
    return out


def unexplained_duplicates(
    receiver: Receiver, kills: Sequence[float], window_s: float
) -> list[str]:
    """Duplicated ids whose first copy did not arrive within `window_s` before a kill.

    A webhook in flight when the worker is killed -9 (sent, its "delivered" mark not
    yet in the changelog) is sent again after the restart: at-least-once can do no
    better without the receiver's help (it dedupes on webhook-id). Any other
    duplicate is a bug.
    """
    first = first_arrivals(receiver)
    return [
        i
        for i in duplicated_ids(receiver)
        if not any(0.0 <= k - first[i] <= window_s for k in kills)
    ]


async def wait_delivered(
    receiver: Receiver,
    expected: Iterable[str],
    workers: Sequence[WorkerProcess] = (),
    *,
    stall_s: float = 120.0,
    cap_s: float = 900.0,
) -> float | None:
    """Poll until every expected id got a 2xx from `receiver`; returns when (monotonic).

    Gives up (None) only when nothing new arrived for `stall_s`, or after `cap_s`: a
    busy machine is slow, a lost trigger is never. Fails at once, with the worker's
    log, if a worker process died meanwhile.
    """
    wanted = set(expected)
    began = last_change = time.monotonic()
    seen = -1
    while True:
        got = len(wanted.intersection(receiver.ids(200)))
        now = time.monotonic()
        if got == len(wanted):
            return now
        if got != seen:
            seen, last_change = got, now
        for w in workers:
            if w.proc is not None and w.proc.poll() is not None:
                raise AssertionError(f"worker exited ({w.proc.returncode}):\n{w.tail()}")
        if now - last_change > stall_s or now - began > cap_s:
            return None
        await asyncio.sleep(0.5)


async def upstream_triggers(bootstrap: str, prefix: str, min_count: int) -> tuple[int, int]:
    """(records, distinct trigger ids) on `<prefix>.triggers`: what evaluate produced."""
    records = await consume_all(bootstrap, f"{prefix}.triggers", min_count=min_count, timeout=60)
    ids = {msgspec.json.decode(r.value or b"{}").get("trigger_id") for r in records}
    return len(records), len(ids)


def report(name: str, figures: Mapping[str, Any]) -> None:
    """Print the figures (visible with -s) and keep them as a test artifact."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / f"faults-{name}.json").write_text(json.dumps(figures, indent=2, default=str))
    text = " ".join(f"{k}={v}" for k, v in figures.items())
    print(f"\n[{name}] {text}", flush=True)


# -- workers, brokers and group assignments -----------------------------------------------


async def ready(worker: WorkerProcess, timeout: float = 120.0) -> None:
    """`wait_ready` off the event loop, so in-process receivers keep answering meanwhile."""
    await asyncio.to_thread(worker.wait_ready, timeout)


async def kill(worker: WorkerProcess) -> None:
    await asyncio.to_thread(worker.kill)


async def group_assignment(bootstrap: str, group: str, topic: str) -> dict[str, set[int]]:
    """Worker url -> the partitions of `topic` it owns, from the consumer group itself.

    Faust puts each member's canonical url in its assignment's user data.
    """
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        (response,) = await admin.describe_consumer_groups([group])
    finally:
        await admin.close()
    out: dict[str, set[int]] = {}
    for g in response.groups:
        for member in g[5]:  # (error, group, state, protocol type, protocol, members, ...)
            raw = member[-1]
            if not raw:
                continue
            assignment = ConsumerProtocolMemberAssignment.decode(raw)
            url = _member_url(assignment.user_data)
            parts = {p for t, ps in assignment.assignment for p in ps if t == topic}
            out.setdefault(url, set()).update(parts)
    return out


def _member_url(user_data: bytes) -> str:
    """Faust's assignor zlib-compresses a JSON `ClientMetadata` into the user data."""
    return str(json.loads(zlib.decompress(user_data))["url"])


def partition_of(user_id: str, partitions: int = PARTITIONS) -> int:
    return partition_for(user_id.encode(), partitions)


@pytest.fixture
async def own_kafka(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[LocalKafka]:
    """A broker of this test's own, on a data dir that survives stop/start (same port)."""
    broker = LocalKafka(data_dir=tmp_path_factory.mktemp("kafka-data"))
    await asyncio.to_thread(broker.start, 180.0)
    try:
        yield broker
    finally:
        await asyncio.to_thread(broker.stop)
