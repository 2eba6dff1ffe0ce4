"""server.properties, log4j2 config and JVM command of the local broker."""

from __future__ import annotations

import base64
from pathlib import Path

from nudgeflow.kafka import config as kc


def _cfg(**kw: object) -> kc.BrokerConfig:
    base: dict[str, object] = {"data_dir": Path("/d"), "port": 19092, "controller_port": 19093}
    base.update(kw)
    return kc.BrokerConfig(**base)  # type: ignore[arg-type]


def _parse(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if line)


def test_single_node_settings() -> None:
    props = kc.server_properties(_cfg())
    for key in (
        "default.replication.factor",
        "offsets.topic.replication.factor",
        "transaction.state.log.replication.factor",
        "transaction.state.log.min.isr",
        "min.insync.replicas",
    ):
        assert props[key] == "1", key
    assert props["group.initial.rebalance.delay.ms"] == "0"
    assert props["auto.create.topics.enable"] == "true"
    assert props["process.roles"] == "broker,controller"
    # A crashed broker re-registers once its old session expires: keep that short.
    heartbeat = int(props["broker.heartbeat.interval.ms"])
    assert heartbeat < int(props["broker.session.timeout.ms"]) <= 5000


def test_listeners_and_static_quorum_use_the_given_ports() -> None:
    props = kc.server_properties(_cfg(port=1234, controller_port=5678))
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:1234,CONTROLLER://127.0.0.1:5678"
    assert props["advertised.listeners"] == "PLAINTEXT://127.0.0.1:1234"
    assert props["controller.quorum.voters"] == "1@127.0.0.1:5678"
    assert "controller.quorum.bootstrap.servers" not in props
    assert _cfg(port=1234).bootstrap == "127.0.0.1:1234"


def test_partitions_log_dir_and_overrides() -> None:
    props = kc.server_properties(
        _cfg(num_partitions=12, extra={"log.retention.hours": "1", "x.y": "z"})
    )
    assert props["num.partitions"] == "12"
    assert props["log.dirs"] == "/d/kafka"
    assert props["log.retention.hours"] == "1"
    assert props["x.y"] == "z"


def test_rendered_properties_round_trip() -> None:
    props = kc.server_properties(_cfg())
    assert _parse(kc.render_properties(props)) == props


def test_render_escapes_backslashes() -> None:
    assert kc.render_properties({"log.dirs": "C:\\kafka"}) == "log.dirs=C:\\\\kafka\n"


def test_broker_logs_to_a_file_not_the_console(tmp_path: Path) -> None:
    text = kc.log4j2_properties(tmp_path / "broker.log")
    pairs = (line.split("=", 1) for line in text.splitlines() if "=" in line)
    conf = {k.strip(): v.strip() for k, v in pairs}
    assert conf["appender.file.fileName"] == str(tmp_path / "broker.log")
    assert conf["rootLogger.appenderRef.file.ref"] == "file"
    assert "Console" not in text
    assert conf["rootLogger.level"] == "INFO"
    assert conf["logger.request.level"] == "WARN"


def test_jvm_options_heap_gc_and_logging() -> None:
    opts = kc.jvm_options(_cfg(heap="256m"))
    assert "-Xmx256m" in opts and "-Xms256m" in opts
    assert "-XX:+UseSerialGC" in opts
    assert "-Dlog4j2.configurationFile=/d/log4j2.properties" in opts
    assert not any("SharedArchiveFile" in o or "ArchiveClassesAtExit" in o for o in opts)


def test_jvm_options_c1_only_unless_the_full_jit_is_asked_for() -> None:
    assert "-XX:TieredStopAtLevel=1" in kc.jvm_options(_cfg())
    assert not any("TieredStopAtLevel" in o for o in kc.jvm_options(_cfg(full_jit=True)))


def test_jvm_options_class_data_sharing() -> None:
    use = kc.jvm_options(_cfg(), cds=Path("/c/k.jsa"), dump_cds=Path("/c/tmp.jsa"))
    assert "-XX:SharedArchiveFile=/c/k.jsa" in use
    assert not any("ArchiveClassesAtExit" in o for o in use)
    dump = kc.jvm_options(_cfg(), dump_cds=Path("/c/tmp.jsa"))
    assert "-XX:ArchiveClassesAtExit=/c/tmp.jsa" in dump


def test_commands_run_kafkas_own_entry_points() -> None:
    cfg = _cfg()
    fmt = kc.format_command("java", Path("/libs"), cfg, "abc")
    assert fmt[0] == "java"
    i = fmt.index("kafka.tools.StorageTool")
    assert fmt[i - 2 : i] == ["-cp", "/libs/*"]
    args = ["format", "-t", "abc", "-c", "/d/server.properties", "--ignore-formatted"]
    assert fmt[i + 1 :] == args
    shared = kc.format_command("java", Path("/libs"), cfg, "abc", cds=Path("/c/k.jsa"))
    assert "-XX:SharedArchiveFile=/c/k.jsa" in shared
    srv = kc.server_command("java", Path("/libs"), cfg)
    assert srv[-2:] == ["kafka.Kafka", "/d/server.properties"]


def test_cluster_id_is_a_kafka_uuid() -> None:
    ids = {kc.new_cluster_id() for _ in range(200)}
    assert len(ids) == 200
    for cid in ids:
        assert len(cid) == 22 and not cid.startswith("-")
        assert len(base64.urlsafe_b64decode(cid + "==")) == 16
