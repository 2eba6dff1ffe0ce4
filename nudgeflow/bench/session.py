"""One bench run: the broker, a scratch directory, and the workers to clean up."""

from __future__ import annotations

import shutil
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from nudgeflow.bench.worker_proc import BenchWorker


@dataclass(frozen=True)
class LoadedWorker:
    """A worker holding N users' state (bench/state.py), and what loading it took."""

    worker: BenchWorker
    ready_s: float  # from its start to /ready (with `seed`: the whole changelog restore)
    rss_ready_mb: float  # RSS when it first answered /ready


@dataclass
class BenchSession:
    bootstrap: str
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="nudgeflow-bench-")))
    partitions: int = 4
    keep: bool = False  # keep the scratch dir (worker logs) after the run
    profile_dir: Path | None = None
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:6])
    workers: list[BenchWorker] = field(default_factory=list)
    load: str = "seed"  # how state scenarios load users: "seed" (changelog) or "events"
    loaded: dict[int, LoadedWorker] = field(default_factory=dict)  # users -> worker with state

    @property
    def log_dir(self) -> Path:
        return self.workdir / "logs"

    def prefix(self, scenario: str) -> str:
        """Fresh topics (and consumer group) per scenario: nothing left from earlier runs."""
        return f"bench-{self.run_id}-{scenario}"

    def worker(
        self,
        config: Path,
        prefix: str,
        roles: tuple[str, ...] = ("evaluate",),
        data_dir: Path | None = None,
    ) -> BenchWorker:
        w = BenchWorker(
            config=config,
            broker=self.bootstrap,
            prefix=prefix,
            data_dir=data_dir or self.workdir / "data" / f"{prefix}-{len(self.workers)}",
            log_dir=self.log_dir,
            roles=roles,
            partitions=self.partitions,
        )
        w.data_dir.parent.mkdir(parents=True, exist_ok=True)
        self.workers.append(w)
        return w

    def close(self) -> None:
        for w in self.workers:
            w.stop()
        if not self.keep:
            shutil.rmtree(self.workdir, ignore_errors=True)
