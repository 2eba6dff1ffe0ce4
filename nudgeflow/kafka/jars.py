"""The broker's jars, resolved once from Maven Central with `mvn` into a cache directory.

Kafka ships no pip-installable broker; the `org.apache.kafka:kafka_2.13` artifact and its
runtime dependencies are the broker. The cache is filled atomically (a temp dir renamed
into place), so a half-finished download is never used and later starts need no network.

Run `python -m nudgeflow.kafka.jars [VERSION]` to fill the cache ahead of time.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

DEFAULT_VERSION = "4.1.1"
# Kafka 4.x logs through slf4j 1.7 to log4j2; this is the binding its own distribution ships.
LOG4J_VERSION = "2.24.3"
CACHE_ENV = "NUDGEFLOW_CACHE"


class KafkaSetupError(RuntimeError):
    """A tool (java, mvn) is missing or the jars cannot be fetched."""


def cache_root() -> Path:
    """`$NUDGEFLOW_CACHE`, else `~/.cache/nudgeflow` (XDG_CACHE_HOME honoured)."""
    if env := os.environ.get(CACHE_ENV):
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "nudgeflow"


def libs_dir(version: str, cache_dir: Path | None = None) -> Path:
    return (cache_dir or cache_root()) / "kafka" / version / "libs"


def render_pom(version: str, log4j_version: str = LOG4J_VERSION) -> str:
    """A throwaway project whose runtime dependencies are exactly the broker classpath."""
    deps = [
        ("org.apache.kafka", "kafka_2.13", version),
        ("org.apache.logging.log4j", "log4j-slf4j-impl", log4j_version),
        ("org.apache.logging.log4j", "log4j-core", log4j_version),
        ("org.apache.logging.log4j", "log4j-api", log4j_version),
    ]
    dep_xml = "\n".join(
        f"    <dependency><groupId>{g}</groupId><artifactId>{a}</artifactId>"
        f"<version>{v}</version></dependency>"
        for g, a, v in deps
    )
    return f"""<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>io.nudgeflow</groupId>
  <artifactId>kafka-runtime</artifactId>
  <version>{version}</version>
  <packaging>pom</packaging>
  <dependencies>
{dep_xml}
  </dependencies>
</project>
"""


def is_complete(libs: Path, version: str) -> bool:
    return (libs / f"kafka_2.13-{version}.jar").is_file()


def find_java() -> str:
    """`$JAVA_HOME/bin/java`, else `java` on PATH."""
    if home := os.environ.get("JAVA_HOME"):
        candidate = Path(home) / "bin" / "java"
        if candidate.is_file():
            return str(candidate)
    found = shutil.which("java")
    if not found:
        raise KafkaSetupError(
            "java not found: the local Kafka broker needs a Java 17+ runtime "
            "(e.g. `apt-get install -y default-jre-headless`, or run `make install`)"
        )
    return found


def ensure_jars(version: str = DEFAULT_VERSION, cache_dir: Path | None = None) -> Path:
    """Return the directory holding the broker's jars, fetching them on first use.

    `cache_dir` is the cache root (default `cache_root()`); jars land in
    `<cache_dir>/kafka/<version>/libs`.
    """
    libs = libs_dir(version, cache_dir)
    if is_complete(libs, version):
        return libs
    mvn = shutil.which("mvn")
    if not mvn:
        raise KafkaSetupError(
            f"mvn not found: it is needed once to fetch Kafka {version} from Maven Central "
            f"into {libs} (e.g. `apt-get install -y maven`, or run `make install`)"
        )
    libs.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="libs.tmp-", dir=libs.parent))
    try:
        out = work / "libs"
        pom = work / "pom.xml"
        pom.write_text(render_pom(version))
        cmd = [
            mvn,
            "-q",
            "-B",
            "-f",
            str(pom),
            "dependency:copy-dependencies",
            f"-DoutputDirectory={out}",
            "-DincludeScope=runtime",
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL)
        if proc.returncode != 0 or not is_complete(out, version):
            tail = (proc.stdout + proc.stderr).strip()[-3000:]
            raise KafkaSetupError(
                f"fetching Kafka {version} with Maven failed (exit {proc.returncode}):\n{tail}"
            )
        try:
            out.rename(libs)
        except OSError:
            # Another process finished first; its copy is as good as ours.
            if not is_complete(libs, version):
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return libs


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    version = args[0] if args else DEFAULT_VERSION
    try:
        libs = ensure_jars(version)
    except KafkaSetupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"Kafka {version} jars: {libs}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
