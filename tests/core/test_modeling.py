"""SARM config validation, network shapes and wiring, teacher forcing, loss, training, persistence, export."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from sarm.model.configuration_sarm import SARMConfig
from sarm.model.labels import progress_from_stage_tau
from sarm.model.modeling_sarm import SARM, SARMOutput, sarm_loss

torch.set_num_threads(1)

NAMES = ["reach", "grasp", "lift"]
PROPS = [0.2, 0.3, 0.5]
FRAME, TEXT, L = 16, 8, 13


def tiny(**overrides: object) -> SARMConfig:
    sizes = {"frame_dim": FRAME, "text_dim": TEXT, "d_model": 32, "n_layers": 1, "n_heads": 4, "ffn_dim": 64}
    return SARMConfig.from_preset("small", NAMES, PROPS, **{**sizes, "dropout": 0.0, **overrides})


def inputs(config: SARMConfig, batch: int = 3, seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    data = {
        "frames": torch.randn(batch, L, config.num_cameras, config.frame_dim, generator=gen),
        "text": torch.randn(batch, config.text_dim, generator=gen),
    }
    if config.state_dim:
        data["state"] = torch.randn(batch, L, config.state_dim, generator=gen)
    return data


# --- configuration ---------------------------------------------------------------------------------


def test_config_json_round_trip_and_derived_sizes() -> None:
    config = SARMConfig.from_preset("paper", ("a", "b"), (0.25, 0.75), state_dim=14, num_cameras=2)
    assert config.stage_names == ["a", "b"] and config.num_stages == 2 and config.sequence_length == 13
    assert (config.d_model, config.n_layers, config.n_heads, config.ffn_dim) == (768, 8, 12, 3072)
    again = SARMConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert again == config


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"stage_names": []}, "stage_names is empty"),
        ({"stage_names": ["a", "a", "b"]}, "duplicates"),
        ({"proportions": [0.5, 0.5]}, "2 proportions for 3 stages"),
        ({"proportions": [0.2, 0.3, 0.6]}, "sum to 1"),
        ({"proportions": [-0.2, 0.7, 0.5]}, "non-negative"),
        ({"d_model": 30}, "not divisible by n_heads"),
        ({"d_model": 2, "n_heads": 1}, "do not fit a one-hot"),
        ({"state_dim": -1}, "state_dim"),
        ({"num_cameras": 0}, "num_cameras"),
        ({"dropout": 1.0}, "dropout"),
        ({"max_rewind": 8}, "max_rewind"),
        ({"stride_seconds": 0.0}, "stride_seconds"),
        ({"teacher_forcing": 1.5}, "teacher_forcing"),
    ],
)
def test_config_validation(overrides: dict[str, object], match: str) -> None:
    fields: dict[str, object] = {"stage_names": NAMES, "proportions": PROPS, **overrides}
    with pytest.raises(ValueError, match=match):
        SARMConfig(**fields)  # type: ignore[arg-type]


def test_config_reports_every_problem_and_unknown_keys() -> None:
    with pytest.raises(ValueError, match=r"d_model .* n_heads.*dropout"):
        SARMConfig(NAMES, PROPS, d_model=30, dropout=2.0)
    with pytest.raises(ValueError, match="unknown preset"):
        SARMConfig.from_preset("huge", NAMES, PROPS)
    with pytest.raises(ValueError, match=r"unknown SARMConfig keys \['hidden_dim'\]"):
        SARMConfig.from_dict({**tiny().to_dict(), "hidden_dim": 3})


# --- shapes and parameter counts ---------------------------------------------------------------------


def test_paper_preset_has_about_119m_parameters() -> None:
    model = SARM(SARMConfig.from_preset("paper", NAMES, PROPS, state_dim=14))
    count = sum(p.numel() for p in model.parameters())
    assert 118e6 < count < 120.5e6
    model.eval()
    with torch.no_grad():
        out = model.predict(**inputs(model.config, batch=1), lengths=torch.tensor([9]))
    assert out.progress.shape == (1,)


@pytest.mark.parametrize("cameras", [1, 2, 3])
@pytest.mark.parametrize("state_dim", [0, 5])
def test_shapes_for_any_camera_count_with_and_without_state(cameras: int, state_dim: int) -> None:
    model = SARM(tiny(num_cameras=cameras, state_dim=state_dim)).eval()
    data = inputs(model.config)
    with torch.no_grad():
        out = model(**data)
        pred = model.predict(**data, lengths=torch.tensor([9, 13, 10]))
    assert out.stage_logits.shape == (3, L, 3) and out.tau.shape == (3, L)
    assert pred.stage_probs.shape == (3, 3)
    assert pred.tau.shape == pred.progress.shape == pred.confidence.shape == (3,)
    torch.testing.assert_close(pred.stage_probs.sum(-1), torch.ones(3))
    torch.testing.assert_close(pred.confidence, pred.stage_probs.max(-1).values)
    assert torch.all((pred.progress >= 0) & (pred.progress <= 1))


def test_small_preset_forward() -> None:
    model = SARM(SARMConfig.from_preset("small", NAMES, PROPS, frame_dim=FRAME, text_dim=TEXT)).eval()
    with torch.no_grad():
        pred = model.predict(**inputs(model.config), lengths=torch.tensor([9, 9, 9]))
    assert pred.stage_probs.shape == (3, 3)


def test_state_presence_must_match_config() -> None:
    with pytest.raises(ValueError, match="state must be given"):
        SARM(tiny(state_dim=4))(**inputs(tiny()))
    with pytest.raises(ValueError, match="state must be given"):
        SARM(tiny())(**inputs(tiny()), state=torch.zeros(3, L, 4))


# --- wiring --------------------------------------------------------------------------------------------


def test_outputs_are_causal_over_time_steps() -> None:
    """A frame changes no earlier position: attention is time-causal and fusion never mixes steps."""
    model = SARM(tiny(num_cameras=2, state_dim=4)).eval()
    data = inputs(model.config)
    changed = {key: value.clone() for key, value in data.items()}
    changed["frames"][:, 6] += 3.0
    changed["state"][:, 6] -= 2.0
    with torch.no_grad():
        before, after = model(**data), model(**changed)
    torch.testing.assert_close(before.stage_logits[:, :6], after.stage_logits[:, :6])
    torch.testing.assert_close(before.tau[:, :6], after.tau[:, :6])
    assert not torch.allclose(before.stage_logits[:, 6:], after.stage_logits[:, 6:])


def test_padding_never_changes_the_prediction() -> None:
    model = SARM(tiny()).eval()
    data = inputs(model.config)
    padded = {key: value.clone() for key, value in data.items()}
    padded["frames"][:, 9:] = 1e3
    lengths = torch.tensor([9, 9, 9])
    with torch.no_grad():
        a, b = model.predict(**data, lengths=lengths), model.predict(**padded, lengths=lengths)
    for x, y in zip(a, b, strict=True):
        torch.testing.assert_close(x, y)


def test_prediction_reads_the_last_valid_position_and_maps_progress() -> None:
    model = SARM(tiny()).eval()
    data = inputs(model.config)
    lengths = torch.tensor([9, 13, 11])
    with torch.no_grad():
        out, pred = model(**data), model.predict(**data, lengths=lengths)
    rows = torch.arange(3)
    torch.testing.assert_close(pred.stage_probs, out.stage_logits[rows, lengths - 1].softmax(-1))
    torch.testing.assert_close(pred.tau, out.tau[rows, lengths - 1])
    expected = progress_from_stage_tau(pred.stage_probs.argmax(-1).numpy(), pred.tau.numpy(), PROPS)
    np.testing.assert_allclose(pred.progress.numpy(), expected, rtol=1e-5, atol=1e-6)


def test_first_frame_is_marked_by_first_pos() -> None:
    model = SARM(tiny()).eval()
    data = inputs(model.config)
    with torch.no_grad():
        before = model(**data).stage_logits
        model.stage_net.first_pos.fill_(1.0)
        after = model(**data).stage_logits
    assert not torch.allclose(before, after)


def test_teacher_forcing_and_no_gradient_into_the_stage_net() -> None:
    model = SARM(tiny(teacher_forcing=1.0)).train()
    data = inputs(model.config)
    true_stage = torch.randint(0, 3, (3, L), generator=torch.Generator().manual_seed(1))
    out = model(**data, true_stage=true_stage)
    expected = torch.sigmoid(model.subtask_net(data["frames"], data["text"], None, true_stage)).squeeze(-1)
    torch.testing.assert_close(out.tau, expected)
    out.tau.sum().backward()
    assert all(p.grad is None for p in model.stage_net.parameters())
    assert model.subtask_net.head.weight.grad is not None

    model.config.teacher_forcing = 0.0
    argmax_stage = model.stage_net(data["frames"], data["text"], None, None).argmax(-1)
    expected = torch.sigmoid(model.subtask_net(data["frames"], data["text"], None, argmax_stage)).squeeze(-1)
    torch.testing.assert_close(model(**data, true_stage=true_stage).tau, expected)
    # Eval mode is the deployed path: the stage net's own argmax, whatever true_stage says.
    model.config.teacher_forcing = 1.0
    model.eval()
    torch.testing.assert_close(model(**data, true_stage=true_stage).tau, expected)


def test_state_statistics_z_score_raw_state() -> None:
    model = SARM(tiny(state_dim=4)).eval()
    data = inputs(model.config)
    mean, std = torch.tensor([1.0, -2.0, 0.5, 3.0]), torch.tensor([2.0, 0.5, 1.0, 0.0])
    with torch.no_grad():
        reference = model(**{**data, "state": (data["state"] - mean) / torch.tensor([2.0, 0.5, 1.0, 1.0])})
        model.set_state_stats(mean, std)  # the constant last joint is only centred
        raw = model(**data)
    torch.testing.assert_close(raw.stage_logits, reference.stage_logits)


# --- loss, training, persistence, export ---------------------------------------------------------------


def test_loss_by_hand_and_padding_is_ignored() -> None:
    output = SARMOutput(torch.zeros(2, 4, 2), torch.full((2, 4), 0.5))
    stage = torch.zeros(2, 4, dtype=torch.long)
    tau = torch.zeros(2, 4)
    lengths = torch.tensor([2, 3])
    loss = sarm_loss(output, stage, tau, lengths)
    assert loss.stage.item() == pytest.approx(math.log(2))
    assert loss.tau.item() == pytest.approx(0.25)
    assert loss.total.item() == pytest.approx(math.log(2) + 0.25)
    stage[0, 2:], tau[1, 3] = 1, 0.9  # padded positions only
    assert sarm_loss(output, stage, tau, lengths).total.item() == pytest.approx(loss.total.item())


def test_short_training_run_lowers_the_loss() -> None:
    torch.manual_seed(0)
    model = SARM(tiny()).train()
    data = inputs(model.config, batch=16, seed=2)
    # Learnable targets: stage and τ are functions of each frame's embedding.
    true_stage = (data["frames"][..., 0, 0] > 0).long() + (data["frames"][..., 0, 1] > 1).long()
    true_tau = torch.sigmoid(data["frames"][..., 0, 2])
    lengths = torch.randint(9, L + 1, (16,))
    optimiser = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(40):
        loss = sarm_loss(model(**data, true_stage=true_stage), true_stage, true_tau, lengths)
        optimiser.zero_grad()
        loss.total.backward()
        optimiser.step()
        losses.append(loss.total.item())
    assert losses[-1] < 0.5 * losses[0]


def test_state_dict_round_trip_gives_identical_outputs(tmp_path: Path) -> None:
    config = tiny(state_dim=4, num_cameras=2)
    model = SARM(config).eval()
    model.set_state_stats(torch.randn(4), torch.rand(4) + 0.5)
    save_file(model.state_dict(), tmp_path / "model.safetensors")
    restored = SARM(SARMConfig.from_dict(config.to_dict())).eval()
    restored.load_state_dict(load_file(tmp_path / "model.safetensors"))
    data = inputs(config)
    lengths = torch.tensor([9, 12, 13])
    with torch.no_grad():
        for x, y in zip(model.predict(**data, lengths=lengths), restored.predict(**data, lengths=lengths), strict=True):
            assert torch.equal(x, y)


def test_inference_path_exports_to_onnx_with_a_symbolic_batch(tmp_path: Path) -> None:
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    model = SARM(tiny(state_dim=4, num_cameras=2)).eval()

    class Heads(torch.nn.Module):
        def __init__(self, sarm: SARM) -> None:
            super().__init__()
            self.sarm = sarm

        def forward(self, frames: torch.Tensor, text: torch.Tensor, lengths: torch.Tensor, state: torch.Tensor):
            return tuple(self.sarm.predict(frames, text, lengths, state))

    batch = torch.export.Dim("batch")
    data = inputs(model.config, batch=2)
    args = (data["frames"], data["text"], torch.tensor([9, 13]), data["state"])
    program = torch.onnx.export(
        Heads(model).eval(), args, dynamo=True, dynamic_shapes=({0: batch},) * 4, external_data=False, verbose=False
    )
    assert program is not None
    program.save(str(tmp_path / "heads.onnx"))
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(tmp_path / "heads.onnx"), options)
    data = inputs(model.config, batch=5, seed=3)
    lengths = torch.tensor([9, 10, 11, 12, 13])
    feeds = dict(
        zip([i.name for i in session.get_inputs()], [data["frames"], data["text"], lengths, data["state"]], strict=True)
    )
    got = session.run(None, {name: value.numpy() for name, value in feeds.items()})
    with torch.no_grad():
        want = model.predict(data["frames"], data["text"], lengths, data["state"])
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g, w.numpy(), atol=1e-5)
