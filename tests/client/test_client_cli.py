"""The `sarm-client` command against the real gateway, run as a process (`python -m sarm_client`, with only the
client package on the path): health, info, score-video as a table and as JSON, and one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from sarm.encoders.base import TextEncoder
from sarm_client import SarmClient
from tests.client_harness import CLIENT_ROOT, target, write_video
from tests.gateway_harness import INSTRUCTION, TIMEOUT, H, RunningGateway, W, episode_frames


@pytest.fixture(scope="module")
def served(cpu_model_repo: Path, text_encoder: TextEncoder) -> Iterator[RunningGateway]:
    running = RunningGateway(cpu_model_repo, text_encoder)
    yield running
    running.close()


@pytest.fixture(scope="module")
def video_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_video(tmp_path_factory.mktemp("cli") / "episode.mp4", episode_frames(12, seed=70), fps=4)


def sarm_client(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(CLIENT_ROOT)}
    env.pop("SARM_TOKEN", None)
    return subprocess.run(
        [sys.executable, "-m", "sarm_client", *args], env=env, capture_output=True, text=True, timeout=TIMEOUT
    )


def test_health(served: RunningGateway) -> None:
    for service in ([], ["--service", "sarm.v1.RewardService"]):
        result = sarm_client("--target", target(served), "health", *service)
        assert (result.returncode, result.stdout) == (0, "SERVING\n"), result.stderr


def test_info_as_text_and_json(served: RunningGateway) -> None:
    text = sarm_client("--target", target(served), "info")
    assert text.returncode == 0, text.stderr
    assert "stages reach, grasp, lift" in text.stdout and f"1 camera(s) at {H}x{W}" in text.stdout
    as_json = sarm_client("--target", target(served), "info", "--json")
    info = json.loads(as_json.stdout)
    assert info["stage_names"] == ["reach", "grasp", "lift"] and info["image_size"] == [H, W]
    assert info["window"]["frames"] == 9 and info["backend"] == "local"


def test_score_video_as_json_and_table(served: RunningGateway, video_file: Path) -> None:
    result = sarm_client(
        "--target", target(served), "score-video", str(video_file), "--instruction", INSTRUCTION, "--json"
    )
    assert result.returncode == 0, result.stderr
    curve = json.loads(result.stdout)
    assert curve["fps"] == 4.0 and curve["stage_names"] == ["reach", "grasp", "lift"]
    frames = curve["frames"]
    assert [f["frame_index"] for f in frames] == list(range(12))
    assert frames[6]["time_s"] == 1.5 and frames[0]["stage_name"] in curve["stage_names"]
    with SarmClient(target(served)) as client:
        expected = client.score_video(video_file, INSTRUCTION)
    np.testing.assert_allclose([f["progress"] for f in frames], [s.score.progress for s in expected], atol=1e-6)

    table = sarm_client(
        "--target",
        target(served),
        "score-video",
        str(video_file),
        "--instruction",
        INSTRUCTION,
        "--fps",
        "2",
        "--score-every",
        "5",
        "--smoothing",
    )
    assert table.returncode == 0, table.stderr
    header, *rows = table.stdout.splitlines()
    assert header.split() == ["frame", "time_s", "stage", "tau", "progress", "confidence", "smoothed"]
    assert [row.split()[:2] for row in rows] == [["0", "0.000"], ["5", "2.500"], ["10", "5.000"]]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["score-video", "missing.mp4", "--instruction", "x"], "No such file or directory: 'missing.mp4'"),
        (["--tls-ca", "missing.pem", "health"], "No such file or directory: 'missing.pem'"),
        (["score-video", "VIDEO", "--instruction", " "], "INVALID_ARGUMENT: instruction is empty"),
        (["score-video", "VIDEO", "--instruction", "x", "--score-every", "0"], "score_every and smoothing_history"),
    ],
)
def test_errors_are_one_line_and_exit_1(
    served: RunningGateway, video_file: Path, args: list[str], message: str
) -> None:
    args = [str(video_file) if a == "VIDEO" else a for a in args]
    result = sarm_client("--target", target(served), *args)
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.startswith("sarm-client: error: ") and result.stderr.count("\n") == 1, result.stderr
    assert message in result.stderr


def test_an_unreachable_server_is_reported() -> None:
    from sarm.triton.server import free_ports

    [port] = free_ports(1)
    result = sarm_client("--target", f"127.0.0.1:{port}", "--timeout", "5", "health")
    assert result.returncode == 1 and result.stderr.startswith("sarm-client: error: UNAVAILABLE: ")


def test_the_control_loop_example_runs_and_checks_its_answers(served: RunningGateway) -> None:
    env = {**os.environ, "PYTHONPATH": str(CLIENT_ROOT)}
    example = CLIENT_ROOT / "examples" / "control_loop.py"
    result = subprocess.run(
        [sys.executable, str(example), "--target", target(served), "--steps", "12"],
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 12 and lines[-1].split()[0] == "11" and "progress" in lines[-1]
    failing = subprocess.run(
        [sys.executable, str(example), "--target", target(served), "--instruction", " "],
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert failing.returncode == 1 and "FAILED: InvalidArgument: instruction is empty" in failing.stderr
