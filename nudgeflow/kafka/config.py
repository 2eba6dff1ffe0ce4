"""What a single-node KRaft broker is told: server.properties, log4j2 config, JVM command.

Pure functions, so the settings a one-node development broker needs (replication
factors 1, no rebalance delay, small memory footprint) are unit-testable without a JVM.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

NODE_ID = 1
KAFKA_DIR = "kafka"  # log.dirs under the data dir
SERVER_PROPERTIES = "server.properties"
LOG4J2_PROPERTIES = "log4j2.properties"
BROKER_LOG = "broker.log"  # log4j2 output
BROKER_OUT = "broker.out"  # the JVM's own stdout/stderr (crashes, fatal errors)


@dataclass(frozen=True)
class BrokerConfig:
    """Everything that decides how one local broker is laid out and configured."""

    data_dir: Path
    port: int
    controller_port: int
    host: str = "127.0.0.1"
    num_partitions: int = 4
    heap: str = "512m"
    # C1 only (the default) starts the JVM fastest, which tests and `nudgeflow dev` want;
    # the full JIT (C2) takes longer to warm up and then needs less CPU per request, which
    # a benchmark sharing two cores with the broker wants (docs/performance.md, run 8).
    full_jit: bool = False
    retention_hours: int = 24
    extra: Mapping[str, str] = field(default_factory=dict)

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def log_dir(self) -> Path:
        return self.data_dir / KAFKA_DIR

    @property
    def properties_path(self) -> Path:
        return self.data_dir / SERVER_PROPERTIES

    @property
    def log4j2_path(self) -> Path:
        return self.data_dir / LOG4J2_PROPERTIES

    @property
    def log_path(self) -> Path:
        return self.data_dir / BROKER_LOG

    @property
    def out_path(self) -> Path:
        return self.data_dir / BROKER_OUT

    @property
    def formatted_marker(self) -> Path:
        """StorageTool writes this; its presence means the storage is formatted."""
        return self.log_dir / "meta.properties"


def server_properties(cfg: BrokerConfig) -> dict[str, str]:
    """Combined broker+controller with a static one-voter quorum.

    A static quorum (controller.quorum.voters) rather than `--standalone` keeps an
    existing data dir usable when the controller port changes between runs.
    """
    props = {
        "process.roles": "broker,controller",
        "node.id": str(NODE_ID),
        "controller.quorum.voters": f"{NODE_ID}@{cfg.host}:{cfg.controller_port}",
        "listeners": (
            f"PLAINTEXT://{cfg.host}:{cfg.port},CONTROLLER://{cfg.host}:{cfg.controller_port}"
        ),
        "advertised.listeners": f"PLAINTEXT://{cfg.host}:{cfg.port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        "log.dirs": str(cfg.log_dir),
        # One node: every replication factor and min ISR is 1.
        "default.replication.factor": "1",
        "min.insync.replicas": "1",
        "offsets.topic.replication.factor": "1",
        "offsets.topic.num.partitions": "8",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "transaction.state.log.num.partitions": "4",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        # After a crash (SIGKILL) the restarted broker cannot register until the controller
        # expires the old session; 3s instead of 9s keeps fault tests quick.
        "broker.session.timeout.ms": "3000",
        "broker.heartbeat.interval.ms": "500",
        # Development defaults: consumers join at once, topics appear on first use.
        "group.initial.rebalance.delay.ms": "0",
        "auto.create.topics.enable": "true",
        "delete.topic.enable": "true",
        "num.partitions": str(cfg.num_partitions),
        # Retention and a small footprint: many small topics (Faust changelogs, repartition
        # topics) must not each cost tens of megabytes.
        "log.retention.hours": str(cfg.retention_hours),
        "log.retention.check.interval.ms": "60000",
        "log.segment.bytes": str(16 * 1024 * 1024),
        "log.index.size.max.bytes": str(1024 * 1024),
        "log.cleaner.threads": "1",
        "log.cleaner.dedupe.buffer.size": str(16 * 1024 * 1024),
        "num.network.threads": "2",
        "num.io.threads": "4",
        "num.recovery.threads.per.data.dir": "1",
        "background.threads": "4",
    }
    props.update(cfg.extra)
    return props


def render_properties(props: Mapping[str, str]) -> str:
    """Java .properties text; values here never need escaping beyond backslashes."""
    lines = [f"{key}={value.replace(chr(92), chr(92) * 2)}" for key, value in props.items()]
    return "\n".join(lines) + "\n"


def log4j2_properties(log_path: Path) -> str:
    """Broker logs go to a rolling file in the data dir, never to our stdout."""
    return "\n".join(
        [
            "status = warn",
            "name = nudgeflow-kafka",
            "appender.file.type = RollingFile",
            "appender.file.name = file",
            f"appender.file.fileName = {log_path}",
            f"appender.file.filePattern = {log_path}.%i",
            "appender.file.layout.type = PatternLayout",
            "appender.file.layout.pattern = [%d] %p %m (%c)%n",
            "appender.file.policies.type = Policies",
            "appender.file.policies.size.type = SizeBasedTriggeringPolicy",
            "appender.file.policies.size.size = 10MB",
            "appender.file.strategy.type = DefaultRolloverStrategy",
            "appender.file.strategy.max = 2",
            "rootLogger.level = INFO",
            "rootLogger.appenderRef.file.ref = file",
            # Per-request and per-partition chatter: warnings only.
            "logger.request.name = kafka.request.logger",
            "logger.request.level = WARN",
            "logger.state.name = state.change.logger",
            "logger.state.level = WARN",
            "logger.cleaner.name = kafka.log.LogCleaner",
            "logger.cleaner.level = WARN",
            "logger.clients.name = org.apache.kafka.clients",
            "logger.clients.level = WARN",
            "",
        ]
    )


def jvm_options(
    cfg: BrokerConfig, cds: Path | None = None, dump_cds: Path | None = None
) -> list[str]:
    """A small JVM: one heap size, the serial collector, C1 only unless `cfg.full_jit` (C1
    starts faster and is plenty for a development broker). `cds` is a class-data-sharing
    archive of the broker's classes (cuts start time by about a third); `dump_cds` writes
    one when the JVM exits."""
    sharing = []
    if cds is not None:
        sharing.append(f"-XX:SharedArchiveFile={cds}")
    elif dump_cds is not None:
        sharing.append(f"-XX:ArchiveClassesAtExit={dump_cds}")
    return [
        *sharing,
        f"-Xms{cfg.heap}",
        f"-Xmx{cfg.heap}",
        "-XX:+UseSerialGC",
        *([] if cfg.full_jit else ["-XX:TieredStopAtLevel=1"]),
        "-Xss512k",
        "-XX:+ExitOnOutOfMemoryError",
        "-Djava.awt.headless=true",
        f"-Dkafka.logs.dir={cfg.data_dir}",
        f"-Dlog4j2.configurationFile={cfg.log4j2_path}",
    ]


def classpath(libs: Path) -> str:
    return str(libs / "*")


def format_command(
    java: str, libs: Path, cfg: BrokerConfig, cluster_id: str, cds: Path | None = None
) -> list[str]:
    """`kafka-storage.sh format` as Kafka's own bin/ scripts run it."""
    return [
        java,
        *jvm_options(cfg, cds),
        "-cp",
        classpath(libs),
        "kafka.tools.StorageTool",
        "format",
        "-t",
        cluster_id,
        "-c",
        str(cfg.properties_path),
        "--ignore-formatted",
    ]


def server_command(
    java: str,
    libs: Path,
    cfg: BrokerConfig,
    cds: Path | None = None,
    dump_cds: Path | None = None,
) -> list[str]:
    """`kafka-server-start.sh server.properties`."""
    jvm = jvm_options(cfg, cds, dump_cds)
    return [java, *jvm, "-cp", classpath(libs), "kafka.Kafka", str(cfg.properties_path)]


def new_cluster_id() -> str:
    """Kafka's Uuid text form: 16 random bytes, URL-safe base64 without padding; like
    Kafka's Uuid.randomUuid it never starts with '-', which a command line would misread."""
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode("ascii").rstrip("=")
        if not text.startswith("-"):
            return text
