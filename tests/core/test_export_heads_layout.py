"""The heads' export layout (RowsEncoderLayer): same numbers as torch's layers, and the graph ONNX Runtime runs
has none of the slow fusions it was written to avoid (why: sarm/export/onnx_heads.py, bench/heads_profile.py)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

from sarm.export.onnx_heads import OUTPUTS, RowsEncoderLayer, export_heads
from sarm.export.session import cpu_session_options
from sarm.model.configuration_sarm import SARMConfig
from sarm.model.modeling_sarm import SARM


@pytest.mark.parametrize(("activation", "norm_first"), [("relu", False), ("gelu", True)])
@pytest.mark.parametrize("boolean_mask", [True, False])
def test_rows_layer_matches_torch_layer(activation: str, norm_first: bool, boolean_mask: bool) -> None:
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(32, 4, 64, activation=activation, norm_first=norm_first, batch_first=True)
    encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False).eval()
    step = torch.arange(5).repeat_interleave(3)
    mask = step[None, :] > step[:, None]  # SARM's block-causal mask over 5 steps of 3 tokens
    x = torch.randn(6, 15, 32)
    rows = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False).eval()
    rows.layers = nn.ModuleList(RowsEncoderLayer(original) for original in encoder.layers)
    with torch.no_grad():
        want = encoder(x, mask=mask if boolean_mask else mask.float().masked_fill(mask, -torch.inf))
        got = rows(x, mask=mask if boolean_mask else mask.float().masked_fill(mask, -torch.inf))
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_only_layers_it_reproduces_are_rewritten() -> None:
    assert RowsEncoderLayer.supports(nn.TransformerEncoderLayer(32, 4, batch_first=True).eval())
    assert not RowsEncoderLayer.supports(nn.TransformerEncoderLayer(32, 4, batch_first=False).eval())
    assert not RowsEncoderLayer.supports(nn.TransformerEncoderLayer(32, 4, batch_first=True, bias=False).eval())
    assert not RowsEncoderLayer.supports(nn.Linear(32, 32))
    with pytest.raises(ValueError, match="no key padding mask"):
        RowsEncoderLayer(nn.TransformerEncoderLayer(32, 4, batch_first=True).eval())(
            torch.zeros(1, 3, 32), src_key_padding_mask=torch.zeros(1, 3, dtype=torch.bool)
        )


@pytest.fixture(scope="module")
def state_heads(tmp_path_factory: pytest.TempPathFactory) -> tuple[SARM, Path]:
    torch.manual_seed(1)
    config = SARMConfig.from_preset(
        "small", ["reach", "grasp", "lift"], [0.5, 0.2, 0.3], frame_dim=48, text_dim=24, num_cameras=2, state_dim=5
    )
    model = SARM(config).eval()
    for parameter in model.parameters():  # break a fresh init's symmetry so windows score differently
        parameter.data += 0.05 * torch.randn_like(parameter)
    model.set_state_stats(torch.randn(5), torch.rand(5) + 0.5)
    return model, export_heads(model, tmp_path_factory.mktemp("heads") / "heads.onnx")


@pytest.mark.parametrize("batch", [1, 5])
def test_state_model_heads_match_pytorch(state_heads: tuple[SARM, Path], batch: int) -> None:
    model, path = state_heads
    rng = np.random.default_rng(batch)
    feeds = {
        "frames": rng.normal(size=(batch, 13, 2, 48)).astype(np.float32),
        "text": rng.normal(size=(batch, 24)).astype(np.float32),
        "lengths": rng.integers(1, 14, size=(batch, 1)).astype(np.int64),
        "state": rng.normal(size=(batch, 13, 5)).astype(np.float32),
    }
    got = ort.InferenceSession(str(path), cpu_session_options(1), providers=["CPUExecutionProvider"]).run(
        list(OUTPUTS), feeds
    )
    with torch.no_grad():
        want = model.predict(
            *(torch.from_numpy(feeds[k]) for k in ("frames", "text")),
            torch.from_numpy(feeds["lengths"][:, 0]),
            torch.from_numpy(feeds["state"]),
        )
    for name, onnx_value, torch_value in zip(OUTPUTS, got, want, strict=True):
        np.testing.assert_allclose(onnx_value.reshape(torch_value.shape), torch_value.numpy(), atol=1e-5, err_msg=name)
    assert all(type(layer) is nn.TransformerEncoderLayer for layer in model.stage_net.encoder.layers), (
        "export must leave the model's own layers in place"
    )


def test_onnxruntime_runs_gemms_and_no_skip_layer_norm(state_heads: tuple[SARM, Path], tmp_path: Path) -> None:
    options = cpu_session_options(1)
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(str(state_heads[1]), options, providers=["CPUExecutionProvider"])
    ops = Counter(node.op_type for node in onnx.load(options.optimized_model_filepath).graph.node)
    layers = 2 * state_heads[0].config.n_layers
    assert ops["SkipLayerNormalization"] == 0, ops  # its CPU kernel is ~5x Add + LayerNormalization
    assert ops["LayerNormalization"] >= 2 * layers, ops
    assert ops["FusedGemm"] == layers, ops  # first FFN Linear + its ReLU, one kernel per layer
    assert ops["Gemm"] >= 5 * layers, ops  # q, k, v, out-projection and second FFN Linear, bias included
