"""deploy/k8s: every core manifest validates offline against the Kubernetes API schemas (kubernetes-validate, strict:
unknown fields are errors), and the objects agree with each other: selectors, ports, probes, settings, drain time,
the HPA's metrics and the adapter rules that serve them, the images the Dockerfiles build.

ServiceMonitor and PrometheusRule are CRDs of the Prometheus Operator, and Kustomization is kustomize's own file:
kubernetes-validate has no schema for them, so their structure and references are checked here by hand.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from sarm_gateway.settings import Settings
from tests.deploy.test_deploy_compose import settings_from_env
from tests.deploy.test_deploy_prometheus import METRICS

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
# The oldest Kubernetes the manifests are meant for (autoscaling/v2 and policy/v1 GA, appProtocol, sizeLimit) and a
# recent one; kubernetes-validate picks the newest schema set not newer than each.
KUBERNETES_VERSIONS = ("1.29.0", "1.33.0")
NOT_IN_CORE_SCHEMAS = {"ServiceMonitor", "PrometheusRule"}
ADAPTER_VALUES = "prometheus-adapter-values.yaml"


def manifests() -> list[dict[str, Any]]:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    return [doc for name in kustomization["resources"] for doc in yaml.safe_load_all((K8S / name).read_text()) if doc]


def objects(kind: str) -> dict[str, dict[str, Any]]:
    return {doc["metadata"]["name"]: doc for doc in manifests() if doc["kind"] == kind}


def containers(deployment: dict[str, Any]) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = deployment["spec"]["template"]["spec"]["containers"]
    return result


def container_ports(deployment: dict[str, Any]) -> dict[str, int]:
    return {port["name"]: port["containerPort"] for c in containers(deployment) for port in c.get("ports", [])}


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in selector.items())


def deployment_behind(service: dict[str, Any]) -> dict[str, Any]:
    (match,) = [
        d
        for d in objects("Deployment").values()
        if selects(service["spec"]["selector"], d["spec"]["template"]["metadata"]["labels"])
    ]
    return match


def service_port(url_host: str, port: int) -> tuple[dict[str, Any], int]:
    """The Service `url_host` and the container port its `port` leads to."""
    service = objects("Service")[url_host]
    (spec,) = [p for p in service["spec"]["ports"] if p["port"] == port]
    target = spec["targetPort"]
    return service, container_ports(deployment_behind(service))[target] if isinstance(target, str) else target


def gateway() -> dict[str, Any]:
    return objects("Deployment")["sarm-gateway"]


def gateway_config() -> dict[str, str]:
    return objects("ConfigMap")["sarm-gateway"]["data"]


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_manifests_validate_against_kubernetes_schemas(version: str) -> None:
    unknown = set()
    for doc in manifests():
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.SchemaNotFoundError:
            unknown.add(doc["kind"])
    assert unknown == NOT_IN_CORE_SCHEMAS


def test_validation_rejects_a_broken_manifest() -> None:
    broken = copy.deepcopy(gateway())
    broken["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["prot"] = "http"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSIONS[0], strict=True)
    broken = copy.deepcopy(gateway())
    broken["spec"]["replicas"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSIONS[0], strict=True)


def test_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert kustomization["apiVersion"] == "kustomize.config.k8s.io/v1beta1" and kustomization["namespace"] == "sarm"
    files = {path.name for path in K8S.glob("*.yaml")} - {"kustomization.yaml", ADAPTER_VALUES}
    assert sorted(kustomization["resources"]) == sorted(files)
    images = {image["name"]: image["newTag"] for image in kustomization["images"]}
    used = {c["image"] for d in objects("Deployment").values() for c in containers(d)}
    for name, tag in images.items():
        assert f"{name}:{tag}" in used


def test_selectors_match_pod_labels() -> None:
    for name, deployment in objects("Deployment").items():
        selector = deployment["spec"]["selector"]["matchLabels"]
        assert selects(selector, deployment["spec"]["template"]["metadata"]["labels"])
        assert name == selector["app.kubernetes.io/name"]
    for service in objects("Service").values():
        deployment = deployment_behind(service)  # exactly one
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in container_ports(deployment), (service["metadata"]["name"], port)
    pdb = objects("PodDisruptionBudget")["sarm-gateway"]
    assert selects(pdb["spec"]["selector"]["matchLabels"], gateway()["spec"]["template"]["metadata"]["labels"])


def test_probes_and_ports_exist() -> None:
    for name, deployment in objects("Deployment").items():
        ports = container_ports(deployment)
        for container in containers(deployment):
            for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
                spec = container.get(probe)
                assert spec is not None or (name == "sarm-redis" and probe == "startupProbe"), (name, probe)
                handler = (spec or {}).get("httpGet") or (spec or {}).get("tcpSocket")
                if handler:
                    assert handler["port"] in ports, (name, probe)
            resources = container["resources"]
            assert {"cpu", "memory"} <= set(resources["requests"]) and "memory" in resources["limits"], name
            image = container["image"]
            assert re.fullmatch(r"[\w./-]+:[\w.-]+", image) and not image.endswith(":latest"), image
            assert container["securityContext"]["allowPrivilegeEscalation"] is False, name
        assert deployment["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] is True, name


def test_gateway_settings_probes_and_drain(monkeypatch: pytest.MonkeyPatch) -> None:
    config = gateway_config()
    for key in config:
        assert key.startswith("SARM_") and key.removeprefix("SARM_").lower() in Settings.model_fields, key
    # The Secret's one key, with a token per role as the README's `kubectl create secret` writes it.
    env = {**config, "SARM_AUTH_TOKENS": '{"controller": "c-token", "evaluator": "e-token"}'}
    settings = settings_from_env(env, monkeypatch)
    assert settings.backend == "triton" and settings.auth_tokens["controller"] == "c-token"
    (container,) = containers(gateway())
    ports = container_ports(gateway())
    assert ports == {"grpc": settings.grpc_port, "http": settings.http_port}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/livez", "port": "http"}
    sources = container["envFrom"]
    assert {"configMapRef": {"name": "sarm-gateway"}} in sources
    assert {"secretRef": {"name": "sarm-gateway-auth", "optional": False}} in sources
    pre_stop = container["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    grace = gateway()["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace > int(pre_stop[1]) + settings.drain_seconds
    # The image runs as this user (Dockerfile USER), and its root filesystem is read-only: /tmp is a volume.
    dockerfile_user = re.findall(r"^USER (\d+)", (ROOT / "Dockerfile").read_text(), re.M)[-1]
    assert gateway()["spec"]["template"]["spec"]["securityContext"]["runAsUser"] == int(dockerfile_user)
    assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert {"name": "HOME", "value": "/tmp"} in container["env"]  # onnxruntime writes $HOME/.cache


def test_gateway_reaches_triton_and_redis_through_services(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = settings_from_env(gateway_config(), monkeypatch)
    host, port = settings.triton_url.rsplit(":", 1)
    service, target = service_port(host, int(port))
    assert deployment_behind(service)["metadata"]["name"] == "sarm-triton" and target == 8001  # Triton's gRPC
    redis = re.fullmatch(r"redis://([\w-]+):(\d+)/\d+", settings.redis_url or "")
    assert redis
    service, target = service_port(redis.group(1), int(redis.group(2)))
    assert deployment_behind(service)["metadata"]["name"] == "sarm-redis" and target == 6379


def test_triton_gets_a_gpu_and_time_to_build_engines() -> None:
    triton = objects("Deployment")["sarm-triton"]
    (container,) = containers(triton)
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert container_ports(triton) == {"http": 8000, "grpc": 8001, "metrics": 8002}
    startup = container["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 600  # first start builds TensorRT engines
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    gpu_user = re.findall(r"^USER (\d+)", (ROOT / "Dockerfile.gpu").read_text(), re.M)[-1]
    assert triton["spec"]["template"]["spec"]["securityContext"]["runAsUser"] == int(gpu_user)
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["SARM_MODEL_REPOSITORY"] in mounts  # engines are written to a volume, not the image


def test_hpa_scales_the_gateway_on_metrics_the_adapter_serves(monkeypatch: pytest.MonkeyPatch) -> None:
    hpa = objects("HorizontalPodAutoscaler")["sarm-gateway"]["spec"]
    assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "sarm-gateway"}
    assert 2 <= hpa["minReplicas"] < hpa["maxReplicas"]
    names = {metric["pods"]["metric"]["name"] for metric in hpa["metrics"] if metric["type"] == "Pods"}
    assert names == {"sarm_engine_in_flight_requests", "sarm_grpc_active_streams"}
    assert all(METRICS[name] == "gauge" for name in names)
    # Targets below the gateway's own limits: scale out before it refuses calls.
    settings = settings_from_env(gateway_config(), monkeypatch)
    targets = {
        metric["pods"]["metric"]["name"]: float(metric["pods"]["target"]["averageValue"]) for metric in hpa["metrics"]
    }
    assert targets["sarm_engine_in_flight_requests"] < settings.max_in_flight
    assert targets["sarm_grpc_active_streams"] < settings.max_streams
    rules = yaml.safe_load((K8S / ADAPTER_VALUES).read_text())["rules"]["custom"]
    served = {rule["name"]["as"]: rule for rule in rules}
    assert set(served) == names
    for name, rule in served.items():
        assert rule["seriesQuery"].startswith(f"{name}{{") and re.search(rule["name"]["matches"], name)
        assert rule["resources"]["overrides"] == {"namespace": {"resource": "namespace"}, "pod": {"resource": "pod"}}
        assert "<<.Series>>{<<.LabelMatchers>>}" in rule["metricsQuery"] and "<<.GroupBy>>" in rule["metricsQuery"]


def test_service_monitors_select_one_service_and_its_metrics_port() -> None:
    services = objects("Service")
    monitors = objects("ServiceMonitor")
    assert set(monitors) == {"sarm-gateway", "sarm-triton"}
    for name, monitor in monitors.items():
        assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
        selected = [
            s
            for s in services.values()
            if selects(monitor["spec"]["selector"]["matchLabels"], s["metadata"].get("labels", {}))
        ]
        # One Service: the job label is its name (what the alerts select on), and no pod is scraped twice.
        assert [s["metadata"]["name"] for s in selected] == [name]
        port_names = {p["name"] for p in selected[0]["spec"]["ports"]}
        for endpoint in monitor["spec"]["endpoints"]:
            assert endpoint["port"] in port_names and endpoint["path"] == "/metrics"
            assert re.fullmatch(r"\d+s", endpoint["interval"])
    gateway_metrics = monitors["sarm-gateway"]["spec"]["endpoints"][0]["port"]
    _, target = service_port(
        "sarm-gateway",
        next(p["port"] for p in services["sarm-gateway"]["spec"]["ports"] if p["name"] == gateway_metrics),
    )
    assert target == int(gateway_config()["SARM_HTTP_PORT"])  # /metrics is served on the HTTP port
