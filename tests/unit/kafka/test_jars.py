"""Jar cache: where it lives, what the pom asks for, and that a filled cache needs no mvn."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from nudgeflow.kafka import jars

NS = {"m": "http://maven.apache.org/POM/4.0.0"}


def test_pom_asks_for_the_broker_and_a_log4j2_binding() -> None:
    root = ET.fromstring(jars.render_pom("4.1.1", "2.24.3"))
    deps = {
        (d.findtext("m:groupId", namespaces=NS), d.findtext("m:artifactId", namespaces=NS)): (
            d.findtext("m:version", namespaces=NS)
        )
        for d in root.iterfind("m:dependencies/m:dependency", NS)
    }
    assert deps[("org.apache.kafka", "kafka_2.13")] == "4.1.1"
    assert deps[("org.apache.logging.log4j", "log4j-slf4j-impl")] == "2.24.3"
    assert not any("reload4j" in str(a) or "log4j12" in str(a) for _, a in deps)


def test_cache_root_from_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(jars.CACHE_ENV, str(tmp_path))
    assert jars.libs_dir("4.1.1") == tmp_path / "kafka" / "4.1.1" / "libs"


def test_cache_root_default(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(jars.CACHE_ENV, raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert jars.cache_root() == tmp_path / ".cache" / "nudgeflow"


def test_filled_cache_is_used_without_mvn(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    libs = jars.libs_dir("9.9.9", tmp_path)
    libs.mkdir(parents=True)
    (libs / "kafka_2.13-9.9.9.jar").write_bytes(b"")
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    assert jars.ensure_jars("9.9.9", tmp_path) == libs


def test_missing_mvn_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    with pytest.raises(jars.KafkaSetupError, match="mvn not found"):
        jars.ensure_jars("9.9.9", tmp_path)
    assert not jars.libs_dir("9.9.9", tmp_path).exists()


def test_failed_fetch_leaves_no_partial_cache(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "mvn"
    fake.write_text("#!/bin/sh\necho 'Could not resolve dependencies' >&2\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))
    with pytest.raises(jars.KafkaSetupError, match="Could not resolve dependencies"):
        jars.ensure_jars("9.9.9", tmp_path / "cache")
    version_dir = jars.libs_dir("9.9.9", tmp_path / "cache").parent
    assert list(version_dir.iterdir()) == []


def test_missing_java_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(jars.KafkaSetupError, match="java not found"):
        jars.find_java()
