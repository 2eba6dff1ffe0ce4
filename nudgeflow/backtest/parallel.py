"""`nudgeflow backtest --workers N`: one backtest over N processes, output identical to one.

Users are independent of each other except for the clock (the watermark: the largest
event time seen so far, runner.py). So each worker process owns the users whose
crc32(user id) % N is its number, and:

* reads and parses the whole file itself, so it sees every event's time: its watermark,
  and so the instant each timer fires at, is the one-process run's. Parsing is a few
  µs of the ~100 µs an event costs with rules; sending parsed events from one reader
  process to the others would cost more than parsing them twice;
* applies only its users' events and fires only their timers;
* writes each step that produced records to its spool, tagged with the step's place in
  the one-process order: `(event index, 0, deadline, user)` for a timer due before event
  `index` (the runner fires those in (deadline, user) order, its heap's order), then
  `(event index, 1, 0, "")` for the event itself; `finish` fires get the index `_END`.
  No two steps share a tag, so a k-way merge of the spools is the one-process order.

The parent merges the spools into the output files, sums the workers' integer counts
(report.Tally.merge_counts) and adds the conversions itself in the merged order (their
revenue is a float sum: order matters). The files and the summary are byte for byte
what one process writes, except the timing figures (tests/unit/backtest/test_parallel.py).

`allocation: bandit` learns from every user's exposures and conversions (shared state
across users), so a config with such a rule is refused (`BanditRules`).
"""

from __future__ import annotations

import heapq
import multiprocessing
import pickle
import resource
import struct
import tempfile
import time
import zlib
from collections.abc import Iterator, Sequence
from contextlib import closing
from pathlib import Path
from typing import Any, BinaryIO

import msgspec

from nudgeflow.backtest.file import Run, backtest_file, new_tally, peak_rss_mb, summarize
from nudgeflow.backtest.reader import ReadStats, read_events
from nudgeflow.backtest.report import Tally
from nudgeflow.backtest.runner import Backtest
from nudgeflow.engine.actions import Action, Conversion, Decision, Trigger
from nudgeflow.engine.core import Engine
from nudgeflow.events.model import Event

_TIMER, _EVENT = 0, 1
_END = 1 << 62  # the event index of the fires `finish` makes: after every event
_LENGTH = struct.Struct("<I")
_Key = tuple[int, int, int, str]


class BanditRules(ValueError):
    """A config with `allocation: bandit` cannot be split by user."""


def bandit_rules(engine: Engine) -> list[str]:
    return [
        name
        for name, rule in engine.rules.items()
        if rule.experiment is not None and rule.experiment.allocation == "bandit"
    ]


def owner(user_id: str, workers: int) -> int:
    """The worker that owns `user_id` (stable across processes and runs)."""
    return zlib.crc32(user_id.encode()) % workers


class Spool:
    """A worker's tagged output: one frame per step that produced a record to keep."""

    def __init__(self, path: Path, triggers: bool, decisions: bool) -> None:
        self._file: BinaryIO = open(path, "wb", buffering=1 << 20)  # noqa: SIM115
        self._json = msgspec.json.Encoder()
        self._frame = msgspec.msgpack.Encoder()
        self._triggers = triggers
        self._decisions = decisions

    def write(self, key: _Key, actions: Sequence[Action]) -> None:
        encode = self._json.encode_into
        out = (bytearray(), bytearray(), bytearray())  # triggers, decisions, conversions
        for action in actions:
            kind = type(action)
            if kind is Decision:
                if not self._decisions:
                    continue
                buffer = out[1]
            elif kind is Trigger:
                if not self._triggers:
                    continue
                buffer = out[0]
            else:
                buffer = out[2]  # always: the parent tallies them in order
            encode(action, buffer, -1)
            buffer += b"\n"
        if out[0] or out[1] or out[2]:
            frame = self._frame.encode((*key, bytes(out[0]), bytes(out[1]), bytes(out[2])))
            self._file.write(_LENGTH.pack(len(frame)))
            self._file.write(frame)

    def close(self) -> None:
        self._file.close()


def frames(path: Path) -> Iterator[list[Any]]:
    """A spool's frames, in the order written: [index, phase, deadline, user, t, d, c]."""
    decode = msgspec.msgpack.Decoder().decode
    with open(path, "rb", buffering=1 << 20) as spool:
        while header := spool.read(_LENGTH.size):
            (size,) = _LENGTH.unpack(header)
            yield decode(spool.read(size))


class PartBacktest(Backtest):
    """The runner over every event's time but only the events of one partition's users."""

    def __init__(self, engine: Engine, tally: Tally, spool: Spool, part: int, workers: int):
        super().__init__(engine, self._event_actions)
        self.tally = tally
        self.spool = spool
        self.part = part
        self.workers = workers
        self.index = 0

    def feed(self, event: Event) -> None:
        self.index += 1
        watermark = self.advance(event.ts)
        if zlib.crc32(event.user_id.encode()) % self.workers == self.part:
            self.apply(event, watermark)

    def fired(self, user_id: str, deadline: int, actions: Sequence[Action]) -> None:
        self.tally.add(actions)
        self.spool.write((self.index, _TIMER, deadline, user_id), actions)

    def _event_actions(self, actions: Sequence[Action]) -> None:
        self.tally.add(actions)
        self.spool.write((self.index, _EVENT, 0, ""), actions)

    def finish(self, until_ms: int | None = None) -> None:
        self.index = _END
        super().finish(until_ms)


def _work(engine: Engine, events: Path, until_ms: int | None, part: int, workers: int,
          folder: Path, kinds: tuple[bool, bool]) -> None:  # fmt: skip
    """One worker process: its partition's run; the result pickled beside its spool."""
    read = ReadStats()
    tally = new_tally(engine)
    with closing(Spool(folder / f"{part}.spool", *kinds)) as spool:
        backtest = PartBacktest(engine, tally, spool, part, workers)
        stats = backtest.run(read_events(events, read), until_ms)
    cpu = time.process_time()  # a forked child's clock starts at 0
    result = (read, stats, backtest.users, len(backtest.timers), tally, peak_rss_mb(), cpu)
    (folder / f"{part}.result").write_bytes(pickle.dumps(result))


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def backtest_parallel(
    engine: Engine,
    events: Path,
    *,
    workers: int,
    until_ms: int | None = None,
    out: Path | None = None,
    decisions: Path | None = None,
    conversions: Path | None = None,
) -> dict[str, Any]:
    """`backtest_file` over `workers` processes: the same files and summary."""
    if workers <= 1:
        return backtest_file(
            engine, events, until_ms=until_ms, out=out, decisions=decisions, conversions=conversions
        )
    bandits = bandit_rules(engine)
    if bandits:
        raise BanditRules(
            f"rule {bandits[0]!r} has allocation: bandit, which learns from all users "
            f"at once; it cannot be split by user: run it with --workers 1"
        )
    started, cpu_started = time.perf_counter(), time.process_time()
    children_started = _children_cpu()
    with tempfile.TemporaryDirectory(prefix="nudgeflow-backtest-") as tmp:
        folder = Path(tmp)
        kinds = (out is not None, decisions is not None)
        results = _run_workers(engine, events, until_ms, workers, folder, kinds)
        tally = new_tally(engine)
        for result in results:
            tally.merge_counts(result[4])
        paths = (out, decisions, conversions)
        _merge([folder / f"{n}.spool" for n in range(workers)], paths, tally)
    read, stats = results[0][0], results[0][1]
    for result in results[1:]:
        stats.duplicates += result[1].duplicates
        stats.timer_fires += result[1].timer_fires
        stats.stuck_timers += result[1].stuck_timers
    cpu = time.process_time() - cpu_started + _children_cpu() - children_started
    run = Run(
        read,
        stats,
        users=sum(r[2] for r in results),
        timers_pending=sum(r[3] for r in results),
        tally=tally,
        elapsed=time.perf_counter() - started,
        cpu=cpu,
        peak_rss_mb=max(peak_rss_mb(), *(r[5] for r in results)),
    )
    summary = summarize(engine, events, run)
    # each worker's CPU time: the slowest one + the parent's merge is the run's wall time
    # on idle cores (a figure the shared machine's wall clock cannot give)
    summary["worker_cpu_s"] = [round(r[6], 3) for r in results]
    return summary


def _run_workers(engine: Engine, events: Path, until_ms: int | None, workers: int,
                 folder: Path, kinds: tuple[bool, bool]) -> list[Any]:  # fmt: skip
    """Start the worker processes, wait for them all; their results."""
    context = multiprocessing.get_context("fork")  # the workers inherit the built engine
    procs = [
        context.Process(target=_work, args=(engine, events, until_ms, part, workers, folder, kinds))
        for part in range(workers)
    ]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join()
    failed = [f"{n} (exit code {p.exitcode})" for n, p in enumerate(procs) if p.exitcode]
    if failed:
        raise RuntimeError(f"backtest worker {', '.join(failed)} failed")
    return [pickle.loads((folder / f"{n}.result").read_bytes()) for n in range(workers)]


def _merge(spools: list[Path], paths: tuple[Path | None, ...], tally: Tally) -> None:
    """Write the spools' records in the one-process order; tally the conversions."""
    files = [open(p, "wb", buffering=1 << 20) if p else None for p in paths]  # noqa: SIM115
    decode = msgspec.json.Decoder(Conversion).decode_lines
    triggers, decisions, conversions = files
    try:
        for frame in heapq.merge(*(frames(p) for p in spools)):
            if frame[4] and triggers is not None:
                triggers.write(frame[4])
            if frame[5] and decisions is not None:
                decisions.write(frame[5])
            if frame[6]:
                if conversions is not None:
                    conversions.write(frame[6])
                tally.add(decode(frame[6]))
    finally:
        for file in files:
            if file is not None:
                file.close()
