"""The local broker against a real JVM: it serves, keeps data across restarts and
crashes, needs no Maven once the jars are cached, and `nudgeflow kafka` stops on SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nudgeflow.kafka.broker import LocalKafka, free_port, probe
from nudgeflow.kafka.jars import ensure_jars
from tests.fixtures.kafka import Record, consume_all, create_topics, produce, unique_name

pytestmark = pytest.mark.kafka


async def test_round_trip_keeps_keys_values_headers_and_order(kafka_bootstrap: str) -> None:
    topic = unique_name("roundtrip")
    await create_topics(kafka_bootstrap, [topic], partitions=3)
    records = [
        Record(key=f"user-{i % 5}".encode(), value=f"v{i}".encode(), headers=[("n", b"%d" % i)])
        for i in range(50)
    ]
    assert await produce(kafka_bootstrap, topic, records) == 50

    got = await consume_all(kafka_bootstrap, topic, min_count=50, timeout=30)

    assert len(got) == 50
    assert {r.partition for r in got} <= {0, 1, 2}
    by_key: dict[bytes | None, list[int]] = {}
    for r in got:
        assert r.headers["n"] == r.value[1:]  # type: ignore[index]
        by_key.setdefault(r.key, []).append(int(r.headers["n"]))
    # Same key, same partition, in produced order.
    assert by_key == {f"user-{k}".encode(): list(range(k, 50, 5)) for k in range(5)}
    for key in by_key:
        assert len({r.partition for r in got if r.key == key}) == 1


async def test_auto_created_topic_gets_the_configured_partitions(kafka_bootstrap: str) -> None:
    topic = unique_name("auto")
    await produce(kafka_bootstrap, topic, [b"x"])
    got = await consume_all(kafka_bootstrap, topic, min_count=1, timeout=30)
    assert [r.value for r in got] == [b"x"]


@pytest.fixture
def no_maven(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Cache filled first, then a `mvn` on PATH that only records that it was run."""
    ensure_jars()
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    marker = tmp_path / "mvn-was-run"
    fake = bin_dir / "mvn"
    fake.write_text(f"#!/bin/sh\ntouch {marker}\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return marker


async def test_restart_and_crash_keep_data_and_cache_needs_no_maven(no_maven: Path) -> None:
    broker = LocalKafka(num_partitions=2)
    try:
        await asyncio.to_thread(broker.start, 180)
        data_dir, bootstrap = broker.data_dir, broker.bootstrap
        topic = unique_name("durable")
        await produce(broker.bootstrap, topic, [(b"k1", b"before-restart")])

        await asyncio.to_thread(broker.restart, 180)
        assert (broker.data_dir, broker.bootstrap) == (data_dir, bootstrap)
        await produce(broker.bootstrap, topic, [(b"k1", b"after-restart")])

        broker.kill()
        assert not broker.running
        assert not probe(bootstrap, timeout_s=1.0)
        await asyncio.to_thread(broker.start, 180)

        got = await consume_all(broker.bootstrap, topic, min_count=2, timeout=30)
        assert [r.value for r in got] == [b"before-restart", b"after-restart"]
        assert broker.log_path.is_file() and broker.log_path.stat().st_size > 0
    finally:
        await asyncio.to_thread(broker.stop)
    assert not broker.running
    assert not data_dir.exists(), "a temporary data dir is removed on stop"
    assert not no_maven.exists(), "mvn must not run once the jars are cached"


def test_kafka_command_serves_until_sigterm(tmp_path: Path) -> None:
    port = free_port()
    data_dir = tmp_path / "kafka-data"
    cmd = [sys.executable, "-m", "nudgeflow.cli.kafka", "--port", str(port)]
    proc = subprocess.Popen(
        [*cmd, "--data-dir", str(data_dir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        lines = []
        deadline = time.monotonic() + 180
        assert proc.stdout is not None
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if "bootstrap:" in line:
                break
        assert f"bootstrap: 127.0.0.1:{port}" in "".join(lines), "".join(lines)
        assert probe(f"127.0.0.1:{port}", timeout_s=5.0)

        proc.send_signal(signal.SIGTERM)
        rest, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, rest
    assert "Kafka stopped." in rest
    assert not probe(f"127.0.0.1:{port}", timeout_s=1.0)
    assert (data_dir / "kafka" / "meta.properties").is_file(), "an explicit data dir is kept"
