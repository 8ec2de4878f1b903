"""Importing LeRobot 0.6.1 SARM checkpoints: LeRobot's own numbers on its own dataset, and clear refusals.

The golden data (../shared/fixtures/lerobot_sarm_insertion{,_single}) was made by LeRobot itself: a checkpoint,
the CLIP it used, and compute_sarm_progress(stride=8) over lerobot_aloha_insertion. Only frames with
(index − episode start) % 8 == 0 and each episode's last frame are model outputs; the rest is interpolation.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from sarm.cli import app
from sarm.data.lerobot import LeRobotDataset
from sarm.lerobot.checkpoint import load_imported, load_imported_info
from sarm.lerobot.config import LeRobotConfigError, parse_config, read_config
from sarm.lerobot.modeling import ImportedLeRobotSARM, load_lerobot_model
from sarm.lerobot.normalizer import read_normalizer
from sarm.lerobot.scoring import progress_table
from sarm.lerobot.windows import centered_windows
from sarm.scoring.curve import interpolate, scored_frames
from sarm.training.checkpoint import CheckpointError, load_checkpoint, load_model

FIXTURES = Path(__file__).resolve().parents[3] / "shared" / "fixtures"
STRIDE = 8  # the stride LeRobot's compute_sarm_progress ran with
TOLERANCE = 1e-3


def _copy(name: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    source = FIXTURES / name
    if not source.is_dir():
        pytest.skip(f"the shared fixture {source} is missing")
    target = tmp_path_factory.mktemp(name) / name
    shutil.copytree(source, target)
    return target


@pytest.fixture(scope="module")
def aloha(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _copy("lerobot_aloha_insertion", tmp_path_factory)


@pytest.fixture(scope="module")
def dual(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _copy("lerobot_sarm_insertion", tmp_path_factory)


@pytest.fixture(scope="module")
def single(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _copy("lerobot_sarm_insertion_single", tmp_path_factory)


def _import(golden: Path, out: Path) -> None:
    result = CliRunner().invoke(
        app, ["import", "lerobot", str(golden / "checkpoint"), "--clip", str(golden / "clip"), "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert "imported" in result.output


def _scored_mask(episode_index: np.ndarray, frame_index: np.ndarray) -> np.ndarray:
    last = np.r_[episode_index[1:] != episode_index[:-1], True]
    return (frame_index % STRIDE == 0) | last


@pytest.mark.parametrize("golden_name", ["dual", "single"])
def test_imported_checkpoint_reproduces_lerobots_progress(
    golden_name: str, request: pytest.FixtureRequest, aloha: Path, tmp_path: Path
) -> None:
    golden: Path = request.getfixturevalue(golden_name)
    ckpt = tmp_path / "ckpt"
    _import(golden, ckpt)
    scorer, _ = load_imported(ckpt)
    expected_heads = ("sparse", "dense") if golden_name == "dual" else ("sparse",)
    assert scorer.heads == expected_heads

    ref = pq.read_table(golden / "sarm_progress.parquet").to_pydict()
    ds = LeRobotDataset(aloha)
    results = scorer.score_dataset(ds, stride=STRIDE)
    index = np.concatenate([r.index for r in results])
    np.testing.assert_array_equal(index, np.asarray(ref["index"]))
    scored = _scored_mask(np.asarray(ref["episode_index"]), np.asarray(ref["frame_index"]))
    assert scored.sum() == sum(len(r.scored) for r in results) > 400
    table = progress_table(results, expected_heads, str(ckpt))
    assert table.column_names == ["index", "episode_index", "frame_index", *(f"progress_{h}" for h in expected_heads)]
    assert table.column("frame_index").to_pylist() == ref["frame_index"]
    assert table.column("episode_index").to_pylist() == ref["episode_index"]
    for head in expected_heads:
        ours = table.column(f"progress_{head}").to_numpy()
        theirs = np.asarray(ref[f"progress_{head}"])
        diff = np.abs(ours - theirs)[scored]
        assert diff.max() <= TOLERANCE, f"{head}: max |ours − LeRobot| {diff.max():.2e} on scored frames"
        # The interpolated frames follow from the scored ones by the same rule.
        np.testing.assert_allclose(ours, theirs, rtol=0, atol=TOLERANCE)
    if golden_name == "single":
        assert "progress_dense" not in ref


def test_imported_checkpoint_contents(dual: Path, tmp_path: Path) -> None:
    ckpt = tmp_path / "ckpt"
    _import(dual, ckpt)
    data = json.loads((ckpt / "config.json").read_text())
    assert data["format"] == "sarm-checkpoint/1" and data["architecture"] == "lerobot-sarm"
    model = data["model"]
    assert model["window"] == {"mode": "centered", "gap_frames": 30, "n_obs_steps": 8, "frames": 9, "center": 4}
    assert list(model["heads"]) == ["sparse", "dense"]
    assert model["heads"]["sparse"]["stage_names"][0] == "reach_objects"
    assert model["heads"]["dense"]["breakpoints"][-1] == 1.0
    assert model["state"] == {
        "key": "observation.state",
        "dim": 14,
        "max_state_dim": 32,
        "normalization": "MEAN_STD",
        "eps": 1e-8,
    }
    for side in ("frame_encoder", "text_encoder"):
        assert data[side]["id"] == "clip-vit-b32" and data[side]["dim"] == 512
        assert Path(data[side]["model_path"]) == (dual / "clip").resolve()
    tensors = load_file(str(ckpt / "model.safetensors"))
    stats = load_file(str(dual / "checkpoint" / "policy_preprocessor_step_2_normalizer_processor.safetensors"))
    assert torch.equal(tensors["state_normalizer.mean"], stats["observation.state.mean"])
    assert torch.equal(tensors["state_normalizer.std"], stats["observation.state.std"])
    original = load_file(str(dual / "checkpoint" / "model.safetensors"))
    assert all(torch.equal(tensors[k], v) for k, v in original.items())
    assert load_imported_info(ckpt).config == read_config(dual / "checkpoint")

    # Our own loader says what this is instead of failing on a missing field; load_model() dispatches.
    with pytest.raises(CheckpointError, match="lerobot-sarm"):
        load_checkpoint(ckpt)
    network, _ = load_model(ckpt)
    assert isinstance(network, ImportedLeRobotSARM)
    # The network with the normaliser inside equals normalising outside, as the scorer does.
    cfg = network.cfg
    generator = torch.Generator().manual_seed(0)
    frames = torch.randn(3, cfg.window_frames, 512, generator=generator) * 20
    text = torch.randn(3, 512, generator=generator) * 20
    raw_state = torch.randn(3, cfg.window_frames, 14, generator=generator)
    normalizer = read_normalizer(dual / "checkpoint", cfg)
    direct = load_lerobot_model(dual / "checkpoint")
    with torch.no_grad():
        a = network(frames, text, raw_state, "dense")
        b = direct(frames, text, torch.from_numpy(normalizer(raw_state.numpy())), "dense")
    torch.testing.assert_close(a.progress, b.progress, rtol=0, atol=0)


def test_import_refuses_an_existing_output_and_an_uncached_hub_clip(dual: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "x").write_text("")
    args = ["import", "lerobot", str(dual / "checkpoint"), "--clip", str(dual / "clip")]
    result = runner.invoke(app, [*args, "--out", str(tmp_path / "taken")])
    assert result.exit_code == 2 and "not empty" in result.output
    result = runner.invoke(
        app,
        ["import", "lerobot", str(dual / "checkpoint"), "--clip", "nobody/no-such-clip", "--out", str(tmp_path / "o")],
    )
    assert result.exit_code == 2
    assert "not in the local Hugging Face cache" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "o").exists()


def test_import_of_a_folder_without_a_lerobot_config_is_one_line(dual: Path, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    result = CliRunner().invoke(
        app, ["import", "lerobot", str(tmp_path / "empty"), "--clip", str(dual / "clip"), "--out", str(tmp_path / "o")]
    )
    assert result.exit_code == 2 and "config.json is missing" in result.output
    assert len(result.output.strip().splitlines()) <= 2 and "Traceback" not in result.output


def test_import_refuses_a_clip_of_another_width(dual: Path, tmp_path: Path) -> None:
    # A consistent 256-d model (config and weights) cannot take the fixture's 512-d CLIP features.
    lerobot = tmp_path / "lerobot"
    shutil.copytree(dual / "checkpoint", lerobot)
    config = json.loads((lerobot / "config.json").read_text())
    config["image_dim"] = config["text_dim"] = 256
    (lerobot / "config.json").write_text(json.dumps(config))
    tensors = load_file(str(lerobot / "model.safetensors"))
    for key in list(tensors):
        if key.endswith(("lang_proj.weight", "visual_proj.weight")):
            tensors[key] = tensors[key][:, :256].contiguous()
    save_file(tensors, str(lerobot / "model.safetensors"))
    result = CliRunner().invoke(
        app, ["import", "lerobot", str(lerobot), "--clip", str(dual / "clip"), "--out", str(tmp_path / "o")]
    )
    assert result.exit_code == 2 and "'image_dim' (256)" in result.output, result.output
    assert not (tmp_path / "o").exists()


def _lerobot_config(dual: Path) -> dict:
    return json.loads((dual / "checkpoint" / "config.json").read_text())


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("type", "act", "'type'"),
        ("annotation_mode", "triple", "'annotation_mode'"),
        ("n_obs_steps", 7, "'n_obs_steps'"),
        ("num_heads", 5, "'hidden_dim'"),
        ("frame_gap", 0, "'frame_gap'"),
        ("sparse_temporal_proportions", [0.5, 0.5], "'sparse_temporal_proportions'"),
        ("dense_subtask_names", None, "'dense_subtask_names'"),
        ("num_sparse_stages", 4, "'num_sparse_stages'"),
        ("image_key", None, "'image_key'"),
        ("normalization_mapping", {"VISUAL": "MEAN_STD"}, "'normalization_mapping.VISUAL'"),
        ("normalization_mapping", {"STATE": "MIN_MAX"}, "'normalization_mapping.STATE'"),
    ],
)
def test_config_fields_we_cannot_reproduce_are_refused_by_name(
    dual: Path, field: str, value: object, message: str
) -> None:
    data = _lerobot_config(dual) | {field: value}
    with pytest.raises(LeRobotConfigError, match=message):
        parse_config(data)


def test_single_stage_mode_uses_one_task_stage_whatever_the_file_says(single: Path) -> None:
    cfg = read_config(single / "checkpoint")
    assert cfg.annotation_mode == "single_stage" and cfg.dense is None
    assert cfg.sparse.stage_names == ("task",) and cfg.sparse.proportions == (1.0,)
    assert cfg.num_dense_classes == 1  # LeRobot still builds (and saves) a one-class dense stage head


def test_dense_only_mode_has_a_one_stage_sparse_head_and_the_dense_subtasks(dual: Path) -> None:
    data = _lerobot_config(dual) | {"annotation_mode": "dense_only", "sparse_subtask_names": ["a", "b"]}
    cfg = parse_config(data)
    assert [h.name for h in cfg.heads] == ["sparse", "dense"]
    assert cfg.sparse.stage_names == ("task",) and cfg.dense is not None and cfg.dense.num_stages == 5


def test_breakpoints_follow_lerobot() -> None:
    data = json.loads((FIXTURES / "lerobot_sarm_insertion" / "checkpoint" / "config.json").read_text())
    data |= {"sparse_subtask_names": ["a", "b", "c"], "sparse_temporal_proportions": [1, 1, 2], "num_sparse_stages": 3}
    # Proportions not summing to 1 are rescaled; the last breakpoint is exactly 1.
    assert parse_config(data).sparse.breakpoints() == (0.0, 0.25, 0.5, 1.0)


def test_weights_are_checked_strictly(dual: Path, tmp_path: Path) -> None:
    folder = tmp_path / "ckpt"
    shutil.copytree(dual / "checkpoint", folder)
    tensors = load_file(str(folder / "model.safetensors"))
    del tensors["subtask_model.first_pos"]
    tensors["stage_model.extra"] = torch.zeros(1)
    save_file(tensors, str(folder / "model.safetensors"))
    with pytest.raises(ValueError, match=r"missing \['subtask_model.first_pos'\].*unexpected \['stage_model.extra'\]"):
        load_lerobot_model(folder)
    tensors = load_file(str(dual / "checkpoint" / "model.safetensors"))
    tensors["stage_model.heads.sparse.weight"] = torch.zeros(4, 64)
    save_file(tensors, str(folder / "model.safetensors"))
    with pytest.raises(ValueError, match=r"stage_model\.heads\.sparse\.weight"):
        load_lerobot_model(folder)


def test_missing_state_statistics_are_refused(dual: Path, tmp_path: Path) -> None:
    folder = tmp_path / "ckpt"
    shutil.copytree(dual / "checkpoint", folder)
    (folder / "policy_preprocessor_step_2_normalizer_processor.safetensors").unlink()
    with pytest.raises(LeRobotConfigError, match="state_file"):
        read_normalizer(folder, read_config(folder))


def test_centered_windows() -> None:
    rows = centered_windows([0, 50, 99], gap=30, n_obs_steps=8, length=100)
    assert rows.tolist() == [
        [0, 0, 0, 0, 0, 30, 60, 90, 99],
        [0, 0, 0, 20, 50, 80, 99, 99, 99],
        [0, 9, 39, 69, 99, 99, 99, 99, 99],
    ]
    assert centered_windows(5, gap=1, n_obs_steps=2, length=6).tolist() == [[4, 5, 5]]
    with pytest.raises(ValueError, match="even"):
        centered_windows(0, gap=1, n_obs_steps=3, length=5)
    with pytest.raises(ValueError, match="episode"):
        centered_windows(5, gap=1, n_obs_steps=2, length=5)


def test_lerobots_frame_rule_and_interpolation() -> None:
    assert scored_frames(20, 8).tolist() == [0, 8, 16, 19]
    assert scored_frames(17, 8).tolist() == [0, 8, 16]
    assert scored_frames(3, 1).tolist() == [0, 1, 2]
    filled = interpolate(np.array([0, 8, 16, 19]), np.array([0.0, 0.8, 0.4, 1.0], np.float32), 20)
    assert filled.dtype == np.float32
    np.testing.assert_allclose(filled[[0, 4, 8, 12, 16, 19]], [0.0, 0.4, 0.8, 0.6, 0.4, 1.0], atol=1e-7)
    # One scored frame: LeRobot does not interpolate and leaves the others empty.
    assert np.isnan(interpolate(np.array([0]), np.array([0.5], np.float32), 1)).sum() == 0
