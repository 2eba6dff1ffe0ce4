"""docker/: what can be checked without a Docker engine (issue 6, item 6).

The compose file parses and passes `docker-compose config` (Debian's docker-compose, a
client that validates without an engine; installed by `make install`), every file it
mounts exists, the services agree on image, ports and targets with prometheus.yml, the
worker config loads, and the Dockerfile runs as a non-root user with a health check.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from nudgeflow.config.loader import load_config

DOCKER = Path(__file__).resolve().parents[3] / "docker"
COMPOSE = DOCKER / "compose.yaml"
WORKERS = ("worker-1", "worker-2")


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def _env(service: dict) -> dict[str, str]:
    env = service.get("environment", {})
    return {k: str(v) for k, v in env.items()}


def test_services_are_all_there(compose: dict) -> None:
    services = compose["services"]
    assert set(services) == {"kafka", *WORKERS, "receiver", "prometheus", "grafana"}
    kafka = services["kafka"]
    assert kafka["image"].startswith("apache/kafka:")
    assert "controller" in _env(kafka)["KAFKA_PROCESS_ROLES"]  # KRaft: no ZooKeeper
    assert not any("zookeeper" in name for name in services)


def test_every_mounted_file_exists(compose: dict) -> None:
    mounted = []
    for name, service in compose["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                mounted.append((name, DOCKER / source))
        build = service.get("build")
        if build:
            context = DOCKER / build["context"]
            mounted.append((name, context / build["dockerfile"]))
    missing = [(name, str(path)) for name, path in mounted if not path.exists()]
    assert mounted and missing == []
    named = {v.split(":")[0] for s in compose["services"].values() for v in s.get("volumes", [])}
    declared = set(compose["volumes"])
    assert {v for v in named if not v.startswith(".")} == declared


def test_workers_share_one_config_and_differ_in_port_and_data(compose: dict) -> None:
    workers = [compose["services"][w] for w in WORKERS]
    images = {w["image"] for w in workers} | {compose["services"]["receiver"]["image"]}
    assert images == {"nudgeflow:local"} and all(w.get("build") for w in workers)
    configs = [
        [v for v in w["volumes"] if v.endswith("/etc/nudgeflow/nudgeflow.yaml:ro")] for w in workers
    ]
    assert configs[0] == configs[1] and len(configs[0]) == 1
    assert all("/etc/nudgeflow/nudgeflow.yaml" in w["command"] for w in workers)
    ports = [_env(w)["NUDGEFLOW_WEB_PORT"] for w in workers]
    assert len(set(ports)) == 2
    for worker, port in zip(workers, ports, strict=True):
        assert worker["ports"] == [f"{port}:{port}"]
        assert _env(worker)["NUDGEFLOW_BROKER"] == "kafka:9092"
        assert _env(worker)["NUDGEFLOW_WEB_HOST"] == "0.0.0.0"
    data = [{v for v in w["volumes"] if v.endswith(":/var/lib/nudgeflow")} for w in workers]
    assert data[0] != data[1]
    assert all(_env(w)["NUDGEFLOW_DATA_DIR"] == "/var/lib/nudgeflow" for w in workers)


def test_prometheus_scrapes_both_workers(compose: dict) -> None:
    mounts = compose["services"]["prometheus"]["volumes"]
    assert "./prometheus.yml:/etc/prometheus/prometheus.yml:ro" in mounts
    config = yaml.safe_load((DOCKER / "prometheus.yml").read_text())
    job = next(j for j in config["scrape_configs"] if j["job_name"] == "nudgeflow")
    targets = {t for sc in job["static_configs"] for t in sc["targets"]}
    expected = {f"{w}:{_env(compose['services'][w])['NUDGEFLOW_WEB_PORT']}" for w in WORKERS}
    assert targets == expected
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool is missing: `make install` installs Debian's prometheus package")
    done = subprocess.run(
        [promtool, "check", "config", str(DOCKER / "prometheus.yml")],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_grafana_gets_the_provisioning_and_the_dashboard(compose: dict) -> None:
    mounts = compose["services"]["grafana"]["volumes"]
    assert "./grafana/provisioning:/etc/grafana/provisioning:ro" in mounts
    assert "./grafana/dashboards:/var/lib/grafana/dashboards:ro" in mounts
    providers = yaml.safe_load(
        (DOCKER / "grafana/provisioning/dashboards/nudgeflow.yaml").read_text()
    )["providers"]
    assert [p["options"]["path"] for p in providers] == ["/var/lib/grafana/dashboards"]
    datasource = yaml.safe_load(
        (DOCKER / "grafana/provisioning/datasources/prometheus.yaml").read_text()
    )["datasources"][0]
    assert datasource["url"] == "http://prometheus:9090"
    assert (DOCKER / "grafana/dashboards/nudgeflow.json").is_file()


def test_the_receiver_runs_the_demo_receiver_module(compose: dict) -> None:
    receiver = compose["services"]["receiver"]
    assert receiver["entrypoint"] == ["python", "-m", "nudgeflow.cli.receiver"]
    config = (DOCKER / "nudgeflow.yaml").read_text()
    assert "http://receiver:6067/" in config
    assert "6067" in receiver["command"]


def test_the_worker_config_loads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """As mounted in the containers: the config with the package's templates beside it."""
    (tmp_path / "nudgeflow.yaml").write_text((DOCKER / "nudgeflow.yaml").read_text())
    templates = DOCKER.parent / "nudgeflow" / "defaults" / "templates"
    shutil.copytree(templates, tmp_path / "templates")
    monkeypatch.setenv("NUDGEFLOW_DEMO_SECRET", "whsec_ZGVtby1vbmx5LXNlY3JldC1ub3QtZm9yLXByb2Q=")
    config = load_config(tmp_path / "nudgeflow.yaml")
    assert len(config.rules) == 5
    assert list(config.destinations) == ["demo"]


def test_dockerfile_is_slim_non_root_with_a_healthcheck() -> None:
    text = (DOCKER / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim\b", text, re.M)
    users = re.findall(r"^USER\s+(\S+)", text, re.M)
    assert users and users[-1] not in ("root", "0")
    health = re.search(r"^HEALTHCHECK .*?CMD (.*?)$", text, re.M | re.S)
    assert health and "/health" in text[health.start() :]
    assert re.search(r'^ENTRYPOINT \["nudgeflow", "worker"\]', text, re.M)
    assert (DOCKER / "Dockerfile.dockerignore").is_file()


def test_docker_compose_config_accepts_the_file() -> None:
    client = shutil.which("docker-compose")
    if client is None:
        pytest.fail("docker-compose is missing: `make install` installs Debian's docker-compose")
    done = subprocess.run(
        [client, "-f", str(COMPOSE), "config", "-q"], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr
