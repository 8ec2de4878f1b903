"""deploy/compose.yaml: the services, their health checks and start order, and that names, ports and settings agree
across the gateway, Triton, Redis, Prometheus and Grafana.

There is no Docker daemon or compose plugin on dev/CI machines, so the file is checked as data; `docker compose
config` runs too where a compose plugin exists.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from sarm_gateway.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
COMPOSE = DEPLOY / "compose.yaml"
SERVICES = {"gateway", "triton", "triton-cpu", "redis", "prometheus", "grafana"}


def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return data


def services() -> dict[str, dict[str, Any]]:
    return compose()["services"]


def seconds(duration: str) -> float:
    """Compose durations as this file writes them: 20s, 15m, 1m30s."""
    parts = re.fullmatch(r"(?:(\d+)m)?(?:(\d+)s)?", duration)
    assert parts and duration, duration
    return int(parts.group(1) or 0) * 60 + int(parts.group(2) or 0)


def gateway_env() -> dict[str, str]:
    return {key: str(value) for key, value in services()["gateway"]["environment"].items() if value is not None}


def load_triton_cpu() -> ModuleType:
    spec = importlib.util.spec_from_file_location("triton_cpu", DEPLOY / "docker" / "triton_cpu.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def listening_ports(name: str, service: dict[str, Any]) -> set[int]:
    """Container ports a service listens on, from what runs in it."""
    if name == "triton":
        return {
            int(port)
            for line in re.findall(r"^EXPOSE (.+)$", (ROOT / "Dockerfile.gpu").read_text(), re.M)
            for port in line.split()
        }
    if name == "triton-cpu":
        args = load_triton_cpu().parse_args(service["command"])
        return {args.grpc_port, args.http_port, args.metrics_port}
    if name == "redis":
        return {6379}  # redis-server's default; the command sets no --port
    return {int(port.split(":")[-1]) for port in service.get("ports", [])}


def hosts_serving(port: int) -> set[str]:
    """Names (service names and network aliases) under which some service listens on `port`."""
    names = set()
    for name, service in services().items():
        if port in listening_ports(name, service):
            aliases = (service.get("networks") or {}).get("default", {}).get("aliases", [])
            names |= {name, *aliases}
    return names


def settings_from_env(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Settings as the process reads them: from exactly these SARM_* variables."""
    for key in [key for key in os.environ if key.startswith("SARM_")]:
        monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return Settings()


def test_services_present_with_health_checks() -> None:
    assert set(services()) == SERVICES
    for name, service in services().items():
        check = service.get("healthcheck", {})
        assert check.get("test", [None])[0] == "CMD", f"{name}: healthcheck in exec form"
        assert seconds(check["interval"]) > 0 and check["retries"] >= 1, name
        assert service.get("restart") == "unless-stopped", name


def test_start_order_waits_for_health() -> None:
    gateway = services()["gateway"]["depends_on"]
    assert {dep: spec["condition"] for dep, spec in gateway.items()} == dict.fromkeys(
        ("triton", "triton-cpu", "redis"), "service_healthy"
    )
    # Exactly one of the two Triton services runs (profiles): the other must not be required.
    assert gateway["triton"]["required"] is False and gateway["triton-cpu"]["required"] is False
    assert gateway["redis"].get("required", True) is True
    assert services()["grafana"]["depends_on"]["prometheus"]["condition"] == "service_healthy"


def test_triton_profiles_answer_under_one_name() -> None:
    triton, cpu = services()["triton"], services()["triton-cpu"]
    assert triton["profiles"] == ["gpu"] and cpu["profiles"] == ["cpu"]
    assert cpu["networks"]["default"]["aliases"] == ["triton"]
    (device,) = triton["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]
    assert triton["build"]["dockerfile"] == "Dockerfile.gpu"
    # The CPU Triton runs the launcher baked into the gateway image on the repository exported there.
    assert cpu["image"] == services()["gateway"]["image"]
    assert cpu["entrypoint"] == ["python", "/opt/sarm/bin/triton_cpu.py"]
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "COPY deploy/docker/triton_cpu.py /opt/sarm/bin/triton_cpu.py" in dockerfile
    assert "--out /opt/sarm/model_repo --target cpu" in dockerfile
    assert cpu["command"][:2] == ["--model-repository", "/opt/sarm/model_repo"]
    assert (DEPLOY / ".env").read_text().count("COMPOSE_PROFILES=gpu") == 1  # GPU unless the shell says cpu


def test_gateway_settings_are_valid_and_point_at_services(monkeypatch: pytest.MonkeyPatch) -> None:
    env = gateway_env()
    for key in env:
        assert key.startswith("SARM_") and key.removeprefix("SARM_").lower() in Settings.model_fields, key
    assert "SARM_AUTH_TOKENS" in services()["gateway"]["environment"]  # passed through from the shell
    settings = settings_from_env(env, monkeypatch)
    assert settings.backend == "triton"
    host, port = settings.triton_url.rsplit(":", 1)
    assert host in hosts_serving(int(port))
    redis = re.fullmatch(r"redis://([\w-]+):(\d+)/\d+", settings.redis_url or "")
    assert redis and redis.group(1) in hosts_serving(int(redis.group(2)))
    published = {int(p.split(":")[-1]) for p in services()["gateway"]["ports"]}
    assert {settings.grpc_port, settings.http_port} == published
    # Docker's SIGKILL must not cut the drain short.
    assert seconds(services()["gateway"]["stop_grace_period"]) > settings.drain_seconds
    assert f"127.0.0.1:{settings.http_port}/readyz" in " ".join(services()["gateway"]["healthcheck"]["test"])


def test_prometheus_scrapes_compose_services() -> None:
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    targets = {scrape["job_name"]: scrape["static_configs"][0]["targets"] for scrape in config["scrape_configs"]}
    assert targets["sarm-gateway"] == [f"gateway:{gateway_env()['SARM_HTTP_PORT']}"]
    assert targets["sarm-triton"] == ["triton:8002"] and "triton" in hosts_serving(8002)
    mounts = dict(volume.split(":")[:2] for volume in services()["prometheus"]["volumes"])
    assert mounts["./prometheus/rules.yml"] == "/etc/prometheus/rules.yml"  # beside the config: `rule_files: rules.yml`


def test_referenced_files_exist_and_images_are_pinned() -> None:
    for name, service in services().items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (DEPLOY / source).exists(), f"{name}: {source}"
        if "build" in service:
            context = DEPLOY / service["build"]["context"]
            assert (context / service["build"]["dockerfile"]).is_file(), name
        image = service["image"]
        assert re.fullmatch(r"[\w./-]+:[\w.-]+", image) and not image.endswith(":latest"), image
    # Only Grafana and Prometheus' UIs are published, and on loopback only.
    for name in ("prometheus", "grafana"):
        assert all(port.startswith("127.0.0.1:") for port in services()[name]["ports"]), name


def test_docker_compose_config() -> None:
    docker = shutil.which("docker")
    if docker is None or subprocess.run([docker, "compose", "version"], capture_output=True).returncode != 0:
        pytest.skip("no docker compose plugin on this machine: compose.yaml is checked as data above")
    for profile in ("gpu", "cpu"):
        result = subprocess.run(
            [docker, "compose", "-f", str(COMPOSE), "--profile", profile, "config", "--quiet"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr


def test_configuration_page_documents_every_setting() -> None:
    # The settings reference moved from the README to docs/configuration.md (generated from the settings).
    page = (ROOT / "docs" / "configuration.md").read_text()
    rows = "\n".join(line for line in page.splitlines() if line.startswith("| `SARM_"))
    documented = set(re.findall(r"`(SARM_[A-Z0-9_]+)`", rows))
    assert documented == {f"SARM_{field.upper()}" for field in Settings.model_fields}
