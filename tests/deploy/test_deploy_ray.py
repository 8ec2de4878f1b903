"""deploy/ray: the KubeRay RayJob that runs `sarm rabc --ray` on a cluster, its volume and its image.

The PersistentVolumeClaim validates offline against the Kubernetes API schemas (kubernetes-validate, strict). RayJob is
a KubeRay CRD with no schema here, so its structure is checked by hand: its fields are RayJob's, and its head and
worker pod templates (core PodTemplateSpecs) validate strictly as PodTemplates. Beyond the schemas: the entrypoint
parses as the real `sarm rabc` command with `--ray auto`; every node sees the dataset and checkpoint at the paths the
driver gives; the head writes the output and labels nothing; Ray's version and the image agree with the pin.
"""

from __future__ import annotations

import copy
import re
import shlex
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import typer
import yaml

from sarm.cli import app
from tests.deploy.test_deploy_docker import copy_sources, in_context, instructions, tool, tracked_files

ROOT = Path(__file__).resolve().parents[2]
RAY = ROOT / "deploy" / "ray"
DOCKERFILE = "deploy/ray/Dockerfile"
KUBERNETES_VERSIONS = ("1.29.0", "1.33.0")
# RayJob v1 fields, from KubeRay's API types (ray-operator/apis/ray/v1): an unknown key is a typo the CRD would drop.
RAYJOB_SPEC = {
    "activeDeadlineSeconds",
    "backoffLimit",
    "rayClusterSpec",
    "submitterPodTemplate",
    "metadata",
    "clusterSelector",
    "submitterConfig",
    "managedBy",
    "deletionStrategy",
    "entrypoint",
    "runtimeEnvYAML",
    "jobId",
    "submissionMode",
    "entrypointResources",
    "entrypointNumCpus",
    "entrypointNumGpus",
    "ttlSecondsAfterFinished",
    "shutdownAfterJobFinishes",
    "suspend",
}
CLUSTER_SPEC = {
    "suspend",
    "managedBy",
    "autoscalerOptions",
    "headServiceAnnotations",
    "enableInTreeAutoscaling",
    "gcsFaultToleranceOptions",
    "headGroupSpec",
    "rayVersion",
    "workerGroupSpecs",
}
HEAD_GROUP = {"serviceType", "headService", "enableIngress", "rayStartParams", "template"}
WORKER_GROUP = {
    "suspend",
    "groupName",
    "replicas",
    "minReplicas",
    "maxReplicas",
    "idleTimeoutSeconds",
    "numOfHosts",
    "rayStartParams",
    "template",
    "scaleStrategy",
}


def documents() -> list[dict[str, Any]]:
    return [doc for path in sorted(RAY.glob("*.yaml")) for doc in yaml.safe_load_all(path.read_text()) if doc]


def rayjob() -> dict[str, Any]:
    (job,) = [doc for doc in documents() if doc["kind"] == "RayJob"]
    return job


def pod_templates(job: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """group name ('head' or the worker group's) -> its pod template."""
    cluster = job["spec"]["rayClusterSpec"]
    templates = {"head": cluster["headGroupSpec"]["template"]}
    templates |= {group["groupName"]: group["template"] for group in cluster["workerGroupSpecs"]}
    return templates


def as_pod_template(template: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "t"}, "template": template}


def ray_pin() -> str:
    extra = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["ray"]
    (pin,) = [r for r in extra if r.startswith("ray==")]
    return pin.removeprefix("ray==")


def mounts(template: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """mountPath -> mount (with the volume it names) of the pod's first (Ray) container."""
    volumes = {v["name"]: v for v in template["spec"]["volumes"]}
    return {
        m["mountPath"]: m | {"volume": volumes[m["name"]]} for m in template["spec"]["containers"][0]["volumeMounts"]
    }


def under(path: str, mount_paths: dict[str, Any]) -> str | None:
    return next((m for m in mount_paths if path == m or path.startswith(m.rstrip("/") + "/")), None)


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_core_objects_and_pod_templates_validate(version: str) -> None:
    unknown = set()
    for doc in documents():
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.SchemaNotFoundError:
            unknown.add(doc["kind"])
    assert unknown == {"RayJob"}
    for name, template in pod_templates(rayjob()).items():
        try:
            kubernetes_validate.validate(as_pod_template(template), version, strict=True)
        except kubernetes_validate.ValidationError as error:
            pytest.fail(f"{name} pod template: {error}")


def test_validation_rejects_a_broken_pod_template() -> None:
    broken = copy.deepcopy(pod_templates(rayjob())["head"])
    broken["spec"]["containers"][0]["resources"]["limits"]["memroy"] = "4Gi"
    broken["spec"]["containers"][0]["volumeMount"] = []
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(as_pod_template(broken), KUBERNETES_VERSIONS[0], strict=True)


def test_rayjob_structure() -> None:
    job = rayjob()
    assert job["apiVersion"] == "ray.io/v1" and re.fullmatch(r"[a-z0-9-]+", job["metadata"]["name"])
    spec = job["spec"]
    assert set(spec) <= RAYJOB_SPEC, set(spec) - RAYJOB_SPEC
    assert spec["submissionMode"] in ("K8sJobMode", "HTTPMode")
    assert spec["shutdownAfterJobFinishes"] is True and spec["ttlSecondsAfterFinished"] >= 0
    cluster = spec["rayClusterSpec"]
    assert set(cluster) <= CLUSTER_SPEC, set(cluster) - CLUSTER_SPEC
    assert set(cluster["headGroupSpec"]) <= HEAD_GROUP and "template" in cluster["headGroupSpec"]
    assert cluster["rayVersion"] == ray_pin()
    for group in cluster["workerGroupSpecs"]:
        assert set(group) <= WORKER_GROUP, set(group) - WORKER_GROUP
        assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
        assert all(isinstance(v, str) for v in group["rayStartParams"].values())  # a map of strings in the CRD
    assert all(isinstance(v, str) for v in cluster["headGroupSpec"]["rayStartParams"].values())
    namespace = yaml.safe_load((ROOT / "deploy" / "k8s" / "kustomization.yaml").read_text())["namespace"]
    assert {doc["metadata"]["namespace"] for doc in documents()} == {namespace}


def rabc_params(args: list[str]) -> dict[str, Any]:
    """`args` parsed by the real `sarm rabc` as the CLI would (an unknown option or a bad value fails here)."""
    group = typer.main.get_command(app)
    rabc = group.get_command(group.make_context("sarm", ["rabc"], resilient_parsing=True), "rabc")
    assert rabc is not None
    params: dict[str, Any] = rabc.make_context("rabc", list(args)).params
    return params


def entrypoint_params() -> dict[str, Any]:
    args = shlex.split(rayjob()["spec"]["entrypoint"])
    assert args[:2] == ["sarm", "rabc"]
    return rabc_params(args[2:])


def test_entrypoint_is_sarm_rabc_on_the_jobs_cluster() -> None:
    params = entrypoint_params()
    assert params["ray"] == "auto"  # Ray Jobs set RAY_ADDRESS for the driver
    assert params["chunk_size"] >= 1
    with pytest.raises(Exception, match="No such option"):  # strict: a typo in the manifest fails here
        rabc_params(["/data/dataset", "--checkpoint", "c", "--chunk-size", "5", "--out", "o", "--ray-adress", "auto"])


def test_every_node_reads_the_inputs_at_the_drivers_paths() -> None:
    job, params = rayjob(), entrypoint_params()
    templates = pod_templates(job)
    image_checkpoint = [
        args.split()[-1]
        for keyword, args in instructions(ROOT / DOCKERFILE)
        if keyword == "COPY" and args.split()[-2] == "model_repo/default/checkpoint"
    ]
    for name, template in templates.items():
        paths = mounts(template)
        dataset_mount = under(str(params["dataset"]), paths)
        assert dataset_mount, (name, params["dataset"])
        claim = paths[dataset_mount]["volume"]["persistentVolumeClaim"]["claimName"]
        assert claim in {doc["metadata"]["name"] for doc in documents() if doc["kind"] == "PersistentVolumeClaim"}
        checkpoint = str(params["checkpoint"])
        assert under(checkpoint, paths) or checkpoint in image_checkpoint, (name, checkpoint)
        image = template["spec"]["containers"][0]["image"]
        assert image == "sarm-ray:0.1.0", image  # every node the same image: same sarm, same Ray
    head = mounts(templates["head"])
    out_mount = under(str(params["out"]), head)
    assert out_mount and not head[out_mount].get("readOnly", False)  # the driver writes the files on the head
    claims = {t["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"] for t in templates.values()}
    assert len(claims) == 1  # one shared volume
    pvc = next(doc for doc in documents() if doc["kind"] == "PersistentVolumeClaim")
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]  # mounted by pods on several nodes at once


def test_head_labels_nothing_and_workers_get_the_cpus_ray_counts() -> None:
    cluster = rayjob()["spec"]["rayClusterSpec"]
    assert cluster["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
    params = entrypoint_params()
    cpus = sum(g["replicas"] * int(g["rayStartParams"]["num-cpus"]) for g in cluster["workerGroupSpecs"])
    assert params["ray_workers"] == cpus // params["threads"]  # one label worker per --threads CPUs, none idle
    for group in cluster["workerGroupSpecs"]:
        (container, *_) = group["template"]["spec"]["containers"]
        resources = container["resources"]
        cpus = group["rayStartParams"]["num-cpus"]
        assert resources["requests"]["cpu"] == resources["limits"]["cpu"] == cpus, group["groupName"]
        assert resources["requests"]["memory"] == resources["limits"]["memory"]
        memory_gib = int(resources["limits"]["memory"].removesuffix("Gi"))
        assert memory_gib >= 2 * int(cpus), "about 1.5 GiB per label worker, plus Ray"
    for template in pod_templates(rayjob()).values():
        spec = template["spec"]
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["securityContext"]["runAsUser"] == 1000  # the Ray image's user (Dockerfile USER)
        assert spec["containers"][0]["securityContext"]["allowPrivilegeEscalation"] is False
        shm = mounts(template)["/dev/shm"]["volume"]
        assert shm["emptyDir"]["medium"] == "Memory"  # Ray's object store


def test_image_is_rays_with_sarm_on_top() -> None:
    steps = instructions(ROOT / DOCKERFILE)
    args = dict(re.match(r"(\w+)=(\S+)", a).groups() for k, a in steps if k == "ARG")
    assert args["RAY_IMAGE"] == f"rayproject/ray:{ray_pin()}-py311-cpu"
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    assert "<3.12" in requires and ">=3.11" in requires  # py311 image
    runs = [a for k, a in steps if k == "RUN"]
    assert any("torch==2.13.0" in r and "whl/cpu" in r for r in runs)
    assert any(f"ray=={ray_pin()}" in r and " . " in f"{r} " for r in runs)
    user = [a for k, a in steps if k == "USER"][-1]
    assert user == "1000:100"
    env = " ".join(a for k, a in steps if k == "ENV")
    assert "HF_HUB_OFFLINE=1" in env and "RAY_USAGE_STATS_ENABLED=0" in env
    # The entrypoint's checkpoint is exported at build, by the user the pods run as, into its cache.
    checkpoint = str(entrypoint_params()["checkpoint"])
    export = [i for i, (k, a) in enumerate(steps) if k == "RUN" and f"repository_for(Path('{checkpoint}'))" in a]
    assert export and "SARM_CACHE" not in env
    assert all(i > export[0] for i, (k, _) in enumerate(steps) if k == "USER")  # the base image's user (ray) runs it


def test_image_hadolint_clean_and_context_holds_what_copy_needs() -> None:
    result = subprocess.run(
        [tool("hadolint"), "--no-color", "--failure-threshold", "style", str(ROOT / DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    files = tracked_files()
    for source in copy_sources(DOCKERFILE):
        needed = [
            f for f in files if (f == source or f.startswith(source.rstrip("/") + "/")) and "__pycache__" not in f
        ]
        assert needed and all(in_context(f) for f in needed), source
