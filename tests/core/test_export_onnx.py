"""ONNX export of the SARM heads and the frame encoder: parity with PyTorch, symbolic batch, input checks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from sarm.encoders.onnx_export import export_frame_encoder
from sarm.encoders.registry import load_frame_encoder
from sarm.export.onnx_heads import INPUTS, OUTPUTS, export_heads
from sarm.model.configuration_sarm import SARMConfig
from sarm.model.modeling_sarm import SARM


def session(path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def heads(tmp_path_factory: pytest.TempPathFactory) -> tuple[SARM, Path]:
    torch.manual_seed(0)
    config = SARMConfig.from_preset(
        "small", ["reach", "grasp", "lift", "place"], [0.4, 0.1, 0.3, 0.2], frame_dim=64, text_dim=32, num_cameras=2
    )
    model = SARM(config).eval()
    # Break the symmetry of a fresh init so stage probabilities differ across windows.
    for parameter in model.parameters():
        parameter.data += 0.05 * torch.randn_like(parameter)
    return model, export_heads(model, tmp_path_factory.mktemp("heads") / "heads.onnx")


@pytest.mark.parametrize("batch", [1, 3, 32])
def test_heads_match_pytorch(heads: tuple[SARM, Path], batch: int) -> None:
    model, path = heads
    rng = np.random.default_rng(batch)
    frames = rng.normal(size=(batch, 13, 2, 64)).astype(np.float32)
    text = rng.normal(size=(batch, 32)).astype(np.float32)
    lengths = rng.integers(9, 14, size=(batch, 1)).astype(np.int64)
    got = session(path).run(list(OUTPUTS), dict(zip(INPUTS, (frames, text, lengths), strict=True)))
    with torch.no_grad():
        want = model.predict(torch.from_numpy(frames), torch.from_numpy(text), torch.from_numpy(lengths[:, 0]))
    for name, onnx_value, torch_value in zip(OUTPUTS, got, want, strict=True):
        np.testing.assert_allclose(onnx_value.reshape(torch_value.shape), torch_value.numpy(), atol=1e-4, err_msg=name)
    assert got[2].shape == (batch, 1) and got[0].shape == (batch, 4)
    assert batch == 1 or np.ptp(got[2]) > 0, "progress should vary across random windows"


def test_heads_batch_dimension_is_symbolic(heads: tuple[SARM, Path]) -> None:
    graph = onnx.load(str(heads[1])).graph
    for value in [*graph.input, *graph.output]:
        first = value.type.tensor_type.shape.dim[0]
        assert first.dim_param and not first.dim_value, f"{value.name} has a static batch"


def test_heads_reject_wrong_inputs_with_a_clear_error(heads: tuple[SARM, Path]) -> None:
    run = session(heads[1])
    frames = np.zeros((2, 13, 2, 64), np.float32)
    text = np.zeros((2, 32), np.float32)
    lengths = np.full((2, 1), 9, np.int64)
    with pytest.raises(Exception, match=r"Unexpected input data type\. Actual: \(tensor\(double\)\)"):
        run.run(None, {"frames": frames.astype(np.float64), "text": text, "lengths": lengths})
    with pytest.raises(Exception, match=r"invalid dimensions for input: frames .*\n index: 3 Got: 10 Expected: 64"):
        run.run(None, {"frames": frames[..., :10], "text": text, "lengths": lengths})
    with pytest.raises(Exception, match=r"Invalid rank for input: frames Got: 3 Expected: 4"):
        run.run(None, {"frames": frames[0], "text": text, "lengths": lengths})


def test_frame_encoder_matches_pytorch(tmp_path: Path) -> None:
    encoder = load_frame_encoder()
    path = export_frame_encoder(encoder, tmp_path / "encoder.onnx", height=96, width=128)
    images = np.random.default_rng(0).integers(0, 256, size=(3, 96, 128, 3), dtype=np.uint8)
    got = session(path).run(None, {"images": images})[0]
    np.testing.assert_allclose(got, encoder.encode_frames(images), atol=2e-4)
    np.testing.assert_allclose(session(path).run(None, {"images": images[:1]})[0], got[:1], atol=2e-4)
