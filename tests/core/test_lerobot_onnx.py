"""ONNX export of imported LeRobot SARM heads: onnxruntime gives torch's centre outputs (≤ 1e-5)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from sarm.lerobot.checkpoint import import_lerobot, load_imported_network
from sarm.lerobot.onnx import INPUTS, CentreHeads, export_lerobot_heads, state_width
from sarm.manifest import lerobot_output_names as output_names

FIXTURES = Path(__file__).resolve().parents[3] / "shared" / "fixtures"


@pytest.mark.parametrize(
    ("name", "heads"), [("lerobot_sarm_insertion", ("sparse", "dense")), ("lerobot_sarm_insertion_single", ("sparse",))]
)
def test_onnx_heads_match_torch(name: str, heads: tuple[str, ...], tmp_path: Path) -> None:
    golden = FIXTURES / name
    if not golden.is_dir():
        pytest.skip(f"the shared fixture {golden} is missing")
    # Reading shared/ is fine; everything written goes to tmp_path.
    import_lerobot(golden / "checkpoint", str(golden / "clip"), tmp_path / "ckpt")
    network, _ = load_imported_network(tmp_path / "ckpt")
    path = export_lerobot_heads(network, tmp_path / "heads.onnx")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == list(INPUTS)
    assert [o.name for o in session.get_outputs()] == list(output_names(heads))
    cfg = network.cfg
    generator = torch.Generator().manual_seed(1)
    for batch in (1, 5):  # the batch is symbolic
        # CLIP features are projected, not normalised: norms around 20 as in the fixture.
        frames = torch.randn(batch, cfg.window_frames, cfg.image_dim, generator=generator) * 20
        text = torch.randn(batch, cfg.text_dim, generator=generator) * 20
        state = torch.randn(batch, cfg.window_frames, state_width(network), generator=generator)
        with torch.no_grad():
            expected = CentreHeads(network)(frames, text, state)
        got = session.run(None, {"frames": frames.numpy(), "text": text.numpy(), "state": state.numpy()})
        assert len(got) == 3 * len(heads)
        for want, have in zip(expected, got, strict=True):
            assert have.shape == tuple(want.shape)
            np.testing.assert_allclose(have, want.numpy(), rtol=0, atol=1e-5)
