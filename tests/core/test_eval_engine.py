"""`sarm eval` on ONNX Runtime (the checkpoint's exported repository, as `sarm rabc` scores) against PyTorch: the same
per-frame scores and metrics within the export parity tolerance, for a stage checkpoint that reads joint state and a
frame-index baseline; a checkpoint that cannot be exported is scored in PyTorch and says so."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
import torch
from typer.testing import CliRunner

import sarm.device
from sarm.cli import app
from sarm.data.lerobot import LeRobotDataset
from sarm.device import CPU_PROVIDER, CUDA_PROVIDER
from sarm.evaluation import Placement, evaluate_checkpoint
from sarm.scoring.backends import LocalBackend
from sarm.scoring.repository import CACHE_ENV
from sarm.scoring.torch_backend import TorchBackend
from sarm.training.scaffold import untrained_checkpoint
from sarm.training.trainer import TrainConfig, train
from tests.conftest import synthetic_episode, write_embedded

runner = CliRunner()
# The heads' export parity tolerance (tests/core/test_export_onnx.py, test_heads_match_pytorch: ONNX Runtime vs
# PyTorch outputs within atol 1e-4).
PARITY_ATOL = 1e-4
METRICS = ("voc_mean", "demo_mse", "stage_accuracy", "success_auroc")
TORCH_CPU = Placement("torch", torch.device("cpu"))


@pytest.fixture(scope="module")
def embedded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four short annotated episodes (successful and failed) with stored embeddings and joint state."""
    root = tmp_path_factory.mktemp("eval_engine") / "dataset"
    write_embedded(root, [synthetic_episode(20 + 4 * seed, seed) for seed in range(4)])
    return root


@pytest.fixture(scope="module")
def checkpoints(embedded: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A stage checkpoint that reads joint state and a frame-index baseline, briefly trained (in-sample data: only
    parity is judged here). Each is exported once, into the session's cache, on its first ONNX Runtime run."""
    out = tmp_path_factory.mktemp("eval_engine_ckpt")
    runs: dict[str, dict] = {"sarm": {"use_state": True}, "baseline": {"labels": "frame-index"}}
    for name, extra in runs.items():
        settings = {"steps": 20, "batch_size": 8, "eval_every": 20, "val_fraction": 0.25, "seed": 3} | extra
        train(TrainConfig(datasets=[embedded], out=out / name, **settings))
    return {name: out / name for name in runs}


def count_heads_calls(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Heads calls per backend from now on: proof of which one scored."""
    calls = {"local": 0, "torch": 0}
    for name, backend in (("local", LocalBackend), ("torch", TorchBackend)):
        original = backend.heads

        async def counted(self: Any, *inputs: np.ndarray, name: str = name, original: Any = original) -> Any:
            calls[name] += 1
            return await original(self, *inputs)

        monkeypatch.setattr(backend, "heads", counted)
    return calls


@pytest.mark.parametrize("name", ["sarm", "baseline"])
def test_onnx_runtime_scores_equal_pytorch_within_the_export_tolerance(
    name: str, checkpoints: dict[str, Path], embedded: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ds = LeRobotDataset(embedded)
    calls = count_heads_calls(monkeypatch)
    on_torch, torch_results = evaluate_checkpoint(checkpoints[name], ds, where=TORCH_CPU)
    assert calls["torch"] > 0 and calls["local"] == 0
    calls["torch"] = 0
    on_ort, ort_results = evaluate_checkpoint(checkpoints[name], ds)  # the default: ONNX Runtime on the CPU
    assert calls["local"] > 0 and calls["torch"] == 0
    assert (on_ort["engine"], on_ort["device"]) == ("onnxruntime", "cpu") and "engine_note" not in on_ort
    assert (on_torch["engine"], on_torch["device"]) == ("torch", "cpu")
    spread = np.ptp(np.concatenate([r.scores.progress for r in torch_results]))
    assert spread > 0.05, "a constant curve would prove little"
    for want, got in zip(torch_results, ort_results, strict=True):
        assert got.episode == want.episode
        np.testing.assert_array_equal(got.scores.frame_index, want.scores.frame_index)
        for field in ("progress", "stage_probs", "tau", "confidence"):
            np.testing.assert_allclose(
                getattr(got.scores, field), getattr(want.scores, field), atol=PARITY_ATOL, rtol=0, err_msg=field
            )
    for metric in METRICS:
        if on_torch[metric] is None:
            assert on_ort[metric] is None, metric
        else:
            assert on_ort[metric] == pytest.approx(on_torch[metric], abs=PARITY_ATOL), metric
    for quality, mse in on_torch["demo_mse_by_quality"].items():
        assert on_ort["demo_mse_by_quality"][quality] == pytest.approx(mse, abs=PARITY_ATOL)
    assert on_ort["stage_flicker"] == on_torch["stage_flicker"]
    if name == "baseline":
        assert on_ort["stage_accuracy"] is None and on_ort["stage_flicker"] is None
    else:
        assert on_ort["stage_accuracy"] is not None


def test_eval_cli_runs_onnx_runtime_by_default_and_torch_when_asked(
    checkpoints: dict[str, Path], embedded: Path, tmp_path: Path
) -> None:
    reports = {}
    for engine in ("onnxruntime", "torch"):
        out = tmp_path / engine
        args = ["eval", str(checkpoints["sarm"]), str(checkpoints["baseline"]), "--data", str(embedded)]
        extra = [] if engine == "onnxruntime" else ["--engine", "torch"]
        result = runner.invoke(app, [*args, "--out", str(out), "--allow-in-sample", "--device", "cpu", *extra])
        assert result.exit_code == 0, result.output
        assert f"heads run by {engine} on cpu" in result.output
        reports[engine] = json.loads((out / "metrics.json").read_text())
        assert reports[engine]["engine"] == engine and reports[engine]["device"] == "cpu"
        for m in reports[engine]["checkpoints"].values():
            assert (m["engine"], m["device"]) == (engine, "cpu")
        assert (out / "report.md").read_text().count(f"| {engine} (cpu) |") == 2
    for name, want in reports["torch"]["checkpoints"].items():
        got = reports["onnxruntime"]["checkpoints"][name]
        for metric in METRICS:
            assert (got[metric] is None) == (want[metric] is None), metric
            if want[metric] is not None:
                assert got[metric] == pytest.approx(want[metric], abs=PARITY_ATOL), (name, metric)


def test_a_checkpoint_without_an_export_is_scored_in_pytorch_and_says_so(
    embedded: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))  # no cached export of these weights
    checkpoint = untrained_checkpoint(tmp_path / "old", ["reach", "grasp", "lift"], [0.5, 0.2, 0.3], (32, 48))
    config = json.loads((checkpoint / "config.json").read_text())
    del config["training"]["cameras"]  # as checkpoints written before the resolution was recorded
    (checkpoint / "config.json").write_text(json.dumps(config))
    out = tmp_path / "report"
    args = ["eval", str(checkpoint), "--data", str(embedded), "--out", str(out), "--device", "cpu"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "scored in PyTorch: no ONNX export" in result.output
    report = json.loads((out / "metrics.json").read_text())
    m = report["checkpoints"]["old"]
    assert report["engine"] == "onnxruntime" and (m["engine"], m["device"]) == ("torch", "cpu")
    assert "does not record its camera resolution" in m["engine_note"]
    assert "| torch (cpu) |" in (out / "report.md").read_text()
    on_torch, _ = evaluate_checkpoint(checkpoint, LeRobotDataset(embedded), where=TORCH_CPU)
    assert {k: m[k] for k in METRICS} == {k: on_torch[k] for k in METRICS}


def test_eval_on_cuda_without_onnx_runtime_cuda_is_one_line(
    monkeypatch: pytest.MonkeyPatch, checkpoints: dict[str, Path], embedded: Path, tmp_path: Path
) -> None:
    """A GPU, but a CPU-only onnxruntime: the default engine cannot use it, and the line names the way out."""
    monkeypatch.setattr(sarm.device, "cuda_visible", lambda: True)
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["AzureExecutionProvider", CPU_PROVIDER])
    out = tmp_path / "r"
    args = ["eval", str(checkpoints["sarm"]), "--data", str(embedded), "--out", str(out), "--allow-in-sample"]
    result = runner.invoke(app, [*args, "--device", "cuda"])
    assert result.exit_code == 2, result.output
    text = result.output.replace("\n", " ")
    assert f"this onnxruntime has no {CUDA_PROVIDER}" in text and "--engine torch" in text
    assert "Traceback" not in result.output and not out.exists()


def test_an_unknown_engine_is_refused(tmp_path: Path) -> None:
    result = runner.invoke(app, ["eval", "ckpt", "--data", str(tmp_path), "--out", str(tmp_path), "--engine", "tvm"])
    assert result.exit_code == 2 and "Invalid value for '--engine'" in result.output
    assert "'onnxruntime', 'torch'" in result.output.replace("│", " ").replace("\n", " ")


def test_the_cli_spells_the_engines_as_the_evaluation_does() -> None:
    from typing import get_args

    from sarm.cli.evaluate import EvalEngine
    from sarm.evaluation import EVAL_ENGINES

    assert get_args(EvalEngine) == EVAL_ENGINES
