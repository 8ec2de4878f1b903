"""`--device auto|cpu|cuda` (sarm.device) on `sarm embed`, `train`, `eval` and `rabc`.

No test needs a GPU: the CUDA answers are pinned with monkeypatch (no GPU visible, a CPU-only onnxruntime), so the
same assertions hold on a machine that has one. `--device cpu` must give exactly what the default gives where the
default resolves to the CPU.
"""

from __future__ import annotations

import importlib
import io
import json
import shutil
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pyarrow.parquet as pq
import pytest
import torch
from click.testing import Result
from typer.testing import CliRunner

import sarm.device
import sarm.rabc.progress
from sarm.cli import app
from sarm.device import CPU_PROVIDER, CUDA_PROVIDER, DeviceError, onnx_providers, resolve_device
from sarm.embeddings import store_path
from tests.conftest import synthetic_episode, write_embedded

runner = CliRunner()
SIZE = (48, 64)  # the size the shared untrained checkpoint (conftest.sarm_checkpoint) takes
NO_GPU = "--device cuda: no CUDA device is visible (torch.cuda.is_available() is False); use --device cpu or auto"
NO_ORT_CUDA = f"--device cuda: this onnxruntime has no {CUDA_PROVIDER}"


@pytest.fixture
def no_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    """This machine as one without a GPU and with CPU-only onnxruntime, whatever it really has."""
    monkeypatch.setattr(sarm.device, "cuda_visible", lambda: False)
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["AzureExecutionProvider", CPU_PROVIDER])


def assert_one_line_error(result: Result, message: str) -> None:
    assert result.exit_code == 2, result.output
    assert message in result.output.replace("\n", " ") or message in result.output
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


# resolve_device / onnx_providers


def test_auto_is_the_cpu_without_a_gpu_and_cuda_with_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sarm.device, "cuda_visible", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device("cpu") == torch.device("cpu")
    monkeypatch.setattr(sarm.device, "cuda_visible", lambda: True)
    assert resolve_device("auto") == torch.device("cuda")
    assert resolve_device("cuda") == torch.device("cuda")
    assert resolve_device("cpu") == torch.device("cpu")


def test_auto_on_this_machine_follows_torch() -> None:
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")


def test_cuda_without_a_gpu_is_one_clear_error(no_cuda: None) -> None:
    with pytest.raises(DeviceError) as error:
        resolve_device("cuda")
    assert str(error.value) == NO_GPU


@pytest.mark.parametrize("name", ["gpu", "CUDA", "cuda:0", "", "mps"])
def test_unknown_device_names_are_refused(name: str) -> None:
    with pytest.raises(DeviceError, match="--device must be one of auto, cpu, cuda"):
        resolve_device(name)
    with pytest.raises(DeviceError, match="--device must be one of auto, cpu, cuda"):
        onnx_providers(name)


def test_onnx_providers(no_cuda: None, monkeypatch: pytest.MonkeyPatch) -> None:
    assert onnx_providers("cpu") == [CPU_PROVIDER]
    assert onnx_providers("auto") == [CPU_PROVIDER]
    with pytest.raises(DeviceError) as error:
        onnx_providers("cuda")
    assert str(error.value).startswith(NO_ORT_CUDA)
    assert "onnxruntime-gpu" in str(error.value)
    # onnxruntime-gpu: cuda takes its provider (the CPU after it for what CUDA lacks); auto only with a GPU visible.
    monkeypatch.setattr(ort, "get_available_providers", lambda: [CUDA_PROVIDER, CPU_PROVIDER])
    assert onnx_providers("cuda") == [CUDA_PROVIDER, CPU_PROVIDER]
    assert onnx_providers("auto") == [CPU_PROVIDER]
    monkeypatch.setattr(sarm.device, "cuda_visible", lambda: True)
    assert onnx_providers("auto") == [CUDA_PROVIDER, CPU_PROVIDER]
    assert onnx_providers("cpu") == [CPU_PROVIDER]


# The commands: --device cpu equals the default here, --device cuda is one line


@pytest.fixture(scope="module")
def embedded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small annotated dataset of 48x64 frames with stored embeddings (default encoders)."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("device") / "dataset"
    write_embedded(root, [synthetic_episode(20 + 3 * seed, seed, size=SIZE) for seed in range(4)])
    return root


def fresh_copy(root: Path, target: Path) -> Path:
    """`root` without its embeddings."""
    copy = Path(shutil.copytree(root, target))
    shutil.rmtree(copy / "sarm_embeddings")
    return copy


def stored(root: Path) -> dict[str, bytes]:
    store = store_path(root, "efficientnet-lite0")
    return {str(p.relative_to(store)): p.read_bytes() for p in sorted(store.rglob("*.npy"))}


@pytest.mark.parametrize("engine", ["torch", "onnxruntime"])
def test_embed_on_the_cpu_equals_the_default(
    engine: str, no_cuda: None, embedded: Path, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    cache = ["--cache-dir", str(tmp_path_factory.getbasetemp() / "onnx-cache")]  # one export for both runs
    runs = {}
    for name, extra in (("default", []), ("cpu", ["--device", "cpu"])):
        root = fresh_copy(embedded, tmp_path / name)
        result = runner.invoke(app, ["embed", str(root), "--engine", engine, *cache, *extra])
        assert result.exit_code == 0, result.output
        assert "on cpu" in result.output or f"on {CPU_PROVIDER}" in result.output
        runs[name] = stored(root)
    assert runs["default"].keys() == runs["cpu"].keys() and len(runs["cpu"]) == 4 + 2  # episodes, text, distractors
    assert runs["default"] == runs["cpu"]  # byte for byte
    library = stored(embedded)  # embed_dataset's own run, at another batch size: equal within float rounding
    for name, data in runs["cpu"].items():
        np.testing.assert_allclose(_array(data), _array(library[name]), rtol=1e-4, atol=1e-4, err_msg=name)


def _array(npy: bytes) -> np.ndarray:
    return np.load(io.BytesIO(npy))


@pytest.mark.parametrize(("engine", "message"), [("torch", NO_GPU), ("onnxruntime", NO_ORT_CUDA)])
def test_embed_on_cuda_without_one_is_one_line(
    engine: str, message: str, no_cuda: None, embedded: Path, tmp_path: Path
) -> None:
    root = fresh_copy(embedded, tmp_path / "ds")
    result = runner.invoke(app, ["embed", str(root), "--engine", engine, "--device", "cuda"])
    assert_one_line_error(result, message)
    assert not (root / "sarm_embeddings").exists()


def test_an_unknown_device_is_a_usage_error(embedded: Path, tmp_path: Path) -> None:
    for command in (["embed", str(embedded)], ["train", str(embedded), "--out", str(tmp_path / "c")]):
        result = runner.invoke(app, [*command, "--device", "gpu"])
        assert result.exit_code == 2
        assert "'gpu' is not one of" in result.output and "Traceback" not in result.output


def train_args(data: Path, out: Path) -> list[str]:
    return ["train", str(data), "--out", str(out), "--steps", "12", "--eval-every", "6", "--batch-size", "8"]


@pytest.fixture(scope="module")
def trained(embedded: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The same short run with the default device and with --device cpu."""
    work = tmp_path_factory.mktemp("trained")
    runs = {}
    for name, extra in (("default", []), ("cpu", ["--device", "cpu"])):
        with pytest.MonkeyPatch.context() as patch:  # the default is the CPU here even on a GPU machine
            patch.setattr(sarm.device, "cuda_visible", lambda: False)
            result = runner.invoke(app, [*train_args(embedded, work / name), *extra])
        assert result.exit_code == 0, result.output
        assert " steps on cpu" in result.output
        runs[name] = work / name
    return runs


def test_train_on_the_cpu_equals_the_default(trained: dict[str, Path]) -> None:
    weights = {name: (path / "model.safetensors").read_bytes() for name, path in trained.items()}
    assert weights["default"] == weights["cpu"]
    for path in trained.values():
        training = json.loads((path / "config.json").read_text())["training"]
        assert training["device"] == "cpu"  # auto, resolved
    assert [h["val_loss"] for h in _history(trained["default"])] == [h["val_loss"] for h in _history(trained["cpu"])]


def _history(checkpoint: Path) -> list[dict[str, float]]:
    return list(json.loads((checkpoint / "config.json").read_text())["training"]["history"])


def test_train_on_cuda_without_one_is_one_line(no_cuda: None, embedded: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, [*train_args(embedded, tmp_path / "c"), "--device", "cuda"])
    assert_one_line_error(result, NO_GPU)
    assert not (tmp_path / "c").exists()


def test_eval_on_the_cpu_equals_the_default(
    no_cuda: None, trained: dict[str, Path], embedded: Path, tmp_path: Path
) -> None:
    reports = {}
    for name, extra in (("default", []), ("cpu", ["--device", "cpu"])):
        out = tmp_path / name
        args = ["eval", str(trained["cpu"]), "--data", str(embedded), "--out", str(out), "--allow-in-sample"]
        result = runner.invoke(app, [*args, *extra])
        assert result.exit_code == 0, result.output
        assert "on cpu" in result.output
        reports[name] = json.loads((out / "metrics.json").read_text())
    assert reports["default"]["device"] == "cpu"
    assert reports["default"] == reports["cpu"]


def test_eval_on_cuda_without_one_is_one_line(
    no_cuda: None, trained: dict[str, Path], embedded: Path, tmp_path: Path
) -> None:
    args = ["eval", str(trained["cpu"]), "--data", str(embedded), "--out", str(tmp_path / "r"), "--allow-in-sample"]
    assert_one_line_error(runner.invoke(app, [*args, "--device", "cuda"]), NO_GPU)
    assert not (tmp_path / "r").exists()


def rabc_args(data: Path, checkpoint: Path, out: Path, *extra: str) -> list[str]:
    return ["rabc", str(data), "--checkpoint", str(checkpoint), "--chunk-size", "4", "--out", str(out), *extra]


def progress_columns(out: Path) -> dict[str, np.ndarray]:
    table = pq.read_table(out / "sarm_progress.parquet")
    return {name: table.column(name).to_numpy() for name in table.column_names}


def test_rabc_on_the_cpu_equals_the_default(
    no_cuda: None, embedded: Path, sarm_checkpoint: Path, tmp_path: Path
) -> None:
    data = fresh_copy(embedded, tmp_path / "ds")  # from video, through the exported encoder and heads
    runs = {}
    for name, extra in (("default", ()), ("cpu", ("--device", "cpu"))):
        result = runner.invoke(app, rabc_args(data, sarm_checkpoint, tmp_path / name, "--stride", "2", *extra))
        assert result.exit_code == 0, result.output
        runs[name] = progress_columns(tmp_path / name)
    assert runs["default"].keys() == runs["cpu"].keys()
    for column, values in runs["default"].items():
        np.testing.assert_array_equal(values, runs["cpu"][column], err_msg=column)


@pytest.mark.parametrize(
    ("backend", "message"),
    [
        ("local", NO_ORT_CUDA),
        ("triton", "--device cuda applies to --backend local: Triton places the models"),
    ],
)
def test_rabc_on_cuda_without_one_is_one_line(
    backend: str, message: str, no_cuda: None, embedded: Path, sarm_checkpoint: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    result = runner.invoke(app, rabc_args(embedded, sarm_checkpoint, out, "--backend", backend, "--device", "cuda"))
    assert_one_line_error(result, message)
    assert not out.exists()


FIXTURES = Path(__file__).resolve().parents[3] / "shared" / "fixtures"


@pytest.fixture(scope="module")
def imported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """LeRobot's single-stage SARM imported, and the dataset it was trained on (copied: tests never write shared/)."""
    golden, data = FIXTURES / "lerobot_sarm_insertion_single", FIXTURES / "lerobot_aloha_insertion"
    if not (golden.is_dir() and data.is_dir()):
        pytest.skip(f"the shared fixtures are not in {FIXTURES}")
    work = tmp_path_factory.mktemp("imported")
    checkpoint = work / "ckpt"
    result = runner.invoke(
        app, ["import", "lerobot", str(golden / "checkpoint"), "--clip", str(golden / "clip"), "--out", str(checkpoint)]
    )
    assert result.exit_code == 0, result.output
    return checkpoint, Path(shutil.copytree(data, work / "data"))


def test_rabc_of_an_imported_lerobot_model_on_the_cpu_equals_the_default(
    no_cuda: None, imported: tuple[Path, Path], tmp_path: Path
) -> None:
    checkpoint, data = imported
    runs = {}
    for name, extra in (("default", ()), ("cpu", ("--device", "cpu"))):
        result = runner.invoke(app, rabc_args(data, checkpoint, tmp_path / name, "--stride", "40", *extra))
        assert result.exit_code == 0, result.output
        runs[name] = progress_columns(tmp_path / name)
    for column, values in runs["default"].items():
        np.testing.assert_array_equal(values, runs["cpu"][column], err_msg=column)


def test_rabc_of_an_imported_lerobot_model_on_cuda_without_one_is_one_line(
    no_cuda: None, imported: tuple[Path, Path], tmp_path: Path
) -> None:
    checkpoint, data = imported
    out = tmp_path / "out"
    # An imported model labels through the engine on its exported graphs, like ours: ONNX Runtime's provider.
    assert_one_line_error(runner.invoke(app, rabc_args(data, checkpoint, out, "--device", "cuda")), NO_ORT_CUDA)
    assert not out.exists()


# Where ONNX Runtime has a non-CPU provider, it reaches the sessions. AzureExecutionProvider, which every default
# onnxruntime build lists and which leaves all the work to the CPU provider, stands in for CUDA's here.
STAND_IN = ["AzureExecutionProvider", CPU_PROVIDER]


@pytest.fixture
def stand_in_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    if "AzureExecutionProvider" not in ort.get_available_providers():
        pytest.skip("this onnxruntime has no AzureExecutionProvider to stand in for CUDA's")
    embed_module = importlib.import_module("sarm.cli.embed")  # `sarm.cli.embed` is also the command's name
    monkeypatch.setattr(embed_module, "onnx_providers", lambda name: STAND_IN if name == "cuda" else [CPU_PROVIDER])
    monkeypatch.setattr(
        sarm.rabc.progress, "onnx_providers", lambda name: STAND_IN if name == "cuda" else [CPU_PROVIDER]
    )


def test_the_rabc_engine_opens_its_sessions_on_the_providers_given(sarm_checkpoint: Path) -> None:
    from sarm.rabc.progress import EngineHandle
    from sarm.scoring.options import EngineOptions

    if "AzureExecutionProvider" not in ort.get_available_providers():
        pytest.skip("this onnxruntime has no AzureExecutionProvider to stand in for CUDA's")
    handle = EngineHandle.open(sarm_checkpoint, EngineOptions(), providers=STAND_IN)
    try:
        backend = handle.engine.backend
        assert [session.get_providers() for session in (backend._encoder, backend._heads)] == [STAND_IN] * 2
    finally:
        handle.close()


def test_embed_and_rabc_run_on_the_providers_cuda_resolves_to(
    stand_in_cuda: None, embedded: Path, sarm_checkpoint: Path, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    cache = ["--cache-dir", str(tmp_path_factory.getbasetemp() / "onnx-cache")]
    stores = {}
    for name, device in (("cpu", "cpu"), ("stand-in", "cuda")):
        root = fresh_copy(embedded, tmp_path / name)
        result = runner.invoke(app, ["embed", str(root), *cache, "--device", device])
        assert result.exit_code == 0, result.output
        assert f"on {STAND_IN[0] if device == 'cuda' else CPU_PROVIDER}" in result.output
        stores[name] = stored(root)
    assert stores["cpu"] == stores["stand-in"]
    runs = {}
    for name, device in (("cpu", "cpu"), ("stand-in", "cuda")):
        out = tmp_path / f"rabc-{name}"
        result = runner.invoke(app, rabc_args(tmp_path / "cpu", sarm_checkpoint, out, "--device", device))
        assert result.exit_code == 0, result.output
        runs[name] = progress_columns(out)
    for column, values in runs["cpu"].items():
        np.testing.assert_array_equal(values, runs["stand-in"][column], err_msg=column)
