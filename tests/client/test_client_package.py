"""sarm-client is its own package: it builds into a wheel that holds its generated code and its console script,
declares only grpcio, protobuf and numpy (PyAV and pyarrow as extras) at the repository's pins, and imports without
torch (sarm_client.training included), pyarrow, the SARM core or the gateway."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests.client_harness import CLIENT_ROOT

ROOT = CLIENT_ROOT.parent
# Nothing a robot controller should need: importing any of these from the client fails the check.
FORBIDDEN = ("torch", "sarm", "sarm_gateway", "onnxruntime", "tritonclient", "PIL", "av", "pyarrow")
# What the extras bring (and the CLI's optional rich): every module but the extra's own imports without them.
EXTRAS = ("gymnasium", "matplotlib", "rich", "metaworld", "mujoco")
NEEDS_AN_EXTRA = ("sarm_client.rl",)  # importing it without gymnasium says which extra to install
IMPORT_EVERYTHING = f"""
import importlib, pkgutil, sys
for name in {FORBIDDEN + EXTRAS!r}:
    sys.modules[name] = None  # an import of it now raises ImportError
import sarm_client
for module in pkgutil.walk_packages(sarm_client.__path__, "sarm_client."):
    if module.name == "sarm_client.__main__":
        continue
    try:
        importlib.import_module(module.name)
    except ImportError as error:
        if module.name not in {NEEDS_AN_EXTRA!r}:
            raise
        print(error)
from sarm_client import evaluate, plot, video
from sarm_client.episodes import EpisodePool
from sarm_client.models import Encoder, ModelInfo, Window
from sarm_client.rabc import RabcJobs, RabcWeights
from sarm_client.rewards import EpisodeReward, RewardConfig
from sarm_client.training import weighted_loss, weighted_sampler
info = ModelInfo("v", ("a",), (), Window(9, 1.0, 4, 13), 1, (8, 8), Encoder("f", "1", 4), Encoder("t", "1", 4), "")
assert not plot.available()
evaluation = evaluate.Evaluation("i", 0.5, "v", ("a",), ())
for needs_an_extra in (lambda: video.decode("any.mp4", info), lambda: RabcWeights.from_parquet(b""),
                       lambda: plot.plot_curves(evaluation, "any.png")):
    try:
        needs_an_extra()
    except ImportError as error:
        print(error)
print(sarm_client.__file__)
"""
# With the rl extra installed, its module imports without torch, the core or the gateway all the same.
IMPORT_RL = f"""
import sys
for name in {FORBIDDEN!r}:
    sys.modules[name] = None
from sarm_client.rl import SarmReward, SarmVectorReward
print("rl ok")
"""


def pins(pyproject: Path) -> dict[str, str]:
    project = tomllib.loads(pyproject.read_text())["project"]
    extras = project.get("optional-dependencies", {})
    requirements = [*project["dependencies"], *extras.get("video", []), *extras.get("trainer", [])]
    return dict(requirement.split("==") for requirement in requirements)


def test_dependencies_are_minimal_and_pinned_like_the_repository() -> None:
    client = pins(CLIENT_ROOT / "pyproject.toml")
    assert set(client) == {"grpcio", "grpcio-health-checking", "protobuf", "numpy", "av", "pyarrow"}
    root = {name.split("[")[0]: version for name, version in pins(ROOT / "pyproject.toml").items()}
    assert {name: root[name] for name in client} == client
    project = tomllib.loads((CLIENT_ROOT / "pyproject.toml").read_text())["project"]
    assert project["optional-dependencies"]["video"] == [f"av=={client['av']}"]
    assert project["optional-dependencies"]["trainer"] == [f"pyarrow=={client['pyarrow']}"]


def run(*command: str | Path, path: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(path)}
    return subprocess.run([str(c) for c in command], env=env, capture_output=True, text=True, timeout=120)


def test_the_source_imports_without_torch_the_core_or_the_gateway() -> None:
    result = run(sys.executable, "-c", IMPORT_EVERYTHING, path=CLIENT_ROOT)
    assert result.returncode == 0, result.stderr
    assert "decoding video needs PyAV: pip install 'sarm-client[video]'" in result.stdout
    assert "reading RA-BC weights needs pyarrow: pip install 'sarm-client[trainer]'" in result.stdout
    assert "the RL reward wrappers need gymnasium: pip install 'sarm-client[rl]'" in result.stdout
    assert "the curves PNG needs matplotlib: pip install 'sarm-client[plot]'" in result.stdout


def test_the_rl_wrappers_import_without_torch_the_core_or_the_gateway() -> None:
    pytest.importorskip("gymnasium")
    result = run(sys.executable, "-c", IMPORT_RL, path=CLIENT_ROOT)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "rl ok"


def test_the_rl_and_plot_extras_are_pinned() -> None:
    extras = tomllib.loads((CLIENT_ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert extras["rl"] == ["gymnasium==1.3.0"]
    # matplotlib is a dependency of the repository too: the same pin, so both resolve together.
    root = {name.split("[")[0]: version for name, version in pins(ROOT / "pyproject.toml").items()}
    assert extras["plot"] == [f"matplotlib=={root['matplotlib']}"]


@pytest.mark.timeout(300)
def test_the_wheel_installs_its_generated_code_and_console_script(tmp_path: Path) -> None:
    # Built from a copy (setuptools writes beside the sources) without network, installed into a bare directory.
    skip = shutil.ignore_patterns("build", "*.egg-info", "__pycache__")
    source = shutil.copytree(CLIENT_ROOT, tmp_path / "src", ignore=skip)
    built = run(
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "-q",
        "--no-deps",
        "--no-build-isolation",
        "-w",
        tmp_path / "dist",
        source,
        path=tmp_path,
    )
    assert built.returncode == 0, built.stderr
    [wheel] = (tmp_path / "dist").glob("sarm_client-*.whl")
    target = tmp_path / "site"
    installed = run(
        sys.executable,
        "-m",
        "pip",
        "install",
        "-q",
        "--no-deps",
        "--no-index",
        "--target",
        target,
        wheel,
        path=tmp_path,
    )
    assert installed.returncode == 0, installed.stderr
    assert (target / "sarm_client" / "v1" / "sarm_pb2_grpc.py").is_file()
    assert (target / "sarm_client" / "py.typed").is_file()
    result = run(sys.executable, "-c", IMPORT_EVERYTHING, path=target)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == str(target / "sarm_client" / "__init__.py")
    script = run(target / "bin" / "sarm-client", "--help", path=target)
    assert script.returncode == 0 and "score-video" in script.stdout, script.stderr
