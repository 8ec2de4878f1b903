"""One model over several tasks: shared stage classes, per-task progress maps, task chosen by instruction."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from safetensors.torch import load_file, save_file

from sarm.data.annotations import EpisodeAnnotation, Subtask
from sarm.data.episode import EpisodeData
from sarm.data.lerobot import LeRobotDataset
from sarm.embeddings import embed_dataset, load_embeddings
from sarm.encoders.registry import load_frame_encoder, load_text_encoder
from sarm.evaluation import evaluate_checkpoint, ground_truth_progress
from sarm.export.onnx_heads import export_heads
from sarm.model.configuration_sarm import SARMConfig
from sarm.model.labels import stage_breakpoints
from sarm.model.modeling_sarm import SARM
from sarm.scoring.pytorch import score_embeddings
from sarm.training.checkpoint import load_checkpoint
from sarm.training.samples import WindowSampler, episode_arrays, label_vocabulary
from sarm.training.trainer import TrainConfig, evaluate_batch, train, validation_batch
from tests.conftest import synthetic_episode, write_dataset

torch.set_num_threads(1)

FRAME, TEXT, L = 16, 8, 13
CLASSES = ["reach", "grasp", "lift", "place", "move", "insert"]
PICK_PLACE = {
    "instruction": "pick and place",
    "stage_names": ["reach", "grasp", "lift", "place"],
    "proportions": [0.2, 0.1, 0.3, 0.4],
}
ASSEMBLY = {
    "instruction": "assemble",
    "stage_names": ["reach", "grasp", "lift", "move", "insert"],
    "proportions": [0.1, 0.2, 0.1, 0.2, 0.4],
}
SIZES = {
    "frame_dim": FRAME,
    "text_dim": TEXT,
    "d_model": 32,
    "n_layers": 1,
    "n_heads": 4,
    "ffn_dim": 64,
    "dropout": 0.0,
}


def two_tasks(**overrides: object) -> SARMConfig:
    return SARMConfig.from_preset("small", CLASSES, tasks=[PICK_PLACE, ASSEMBLY], **{**SIZES, **overrides})


def two_task_model(seed: int = 0) -> tuple[SARM, torch.Tensor]:
    """A 2-task model with distinct instruction embeddings and weights perturbed off their symmetric init."""
    torch.manual_seed(seed)
    model = SARM(two_tasks()).eval()
    for parameter in model.parameters():
        parameter.data += 0.05 * torch.randn_like(parameter)
    task_text = torch.randn(2, TEXT)
    model.set_task_embeddings(task_text)
    return model, task_text


# --- configuration ---------------------------------------------------------------------------------


def test_config_round_trip_and_configs_written_before_tasks() -> None:
    config = two_tasks()
    assert config.num_tasks == 2 and config.num_stages == 6
    assert config.proportions == [0.2, 0.1, 0.3, 0.4, 0.0, 0.0]  # the first task's ᾱ per class
    assert config.class_proportions(1) == [0.1, 0.2, 0.1, 0.0, 0.2, 0.4]
    assert SARMConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config

    single = SARMConfig.from_preset("small", ["a", "b"], [0.25, 0.75], **SIZES)
    old = {key: value for key, value in single.to_dict().items() if key != "tasks"}
    loaded = SARMConfig.from_dict(old)
    assert loaded == single and loaded.proportions == [0.25, 0.75]
    assert loaded.tasks == [{"instruction": "", "stage_names": ["a", "b"], "proportions": [0.25, 0.75]}]


@pytest.mark.parametrize(
    ("tasks", "proportions", "match"),
    [
        ([], (), "no tasks"),
        ([{**PICK_PLACE, "stage_names": ["reach", "grasp", "lift", "push"]}], (), r"\['push'\] are not in stage_names"),
        ([PICK_PLACE, {**ASSEMBLY, "proportions": [0.1, 0.2, 0.1, 0.2, 0.5]}], (), "task 1: proportions must sum to 1"),
        ([PICK_PLACE, {**ASSEMBLY, "proportions": [0.5, 0.5]}], (), "task 1: 2 proportions for 5 stages"),
        ([PICK_PLACE, {**ASSEMBLY, "instruction": "pick and place"}], (), "share an instruction"),
        ([PICK_PLACE, {"instruction": "x", "stages": ["reach"]}], (), "task 1: expected the keys"),
        ([PICK_PLACE, ASSEMBLY], [0.1, 0.2, 0.1, 0.0, 0.2, 0.4], "not the first task's"),
        ([PICK_PLACE, ASSEMBLY], [0.2, 0.1, 0.3, 0.4], "not the first task's"),  # task-local, not per class
    ],
)
def test_task_validation(tasks: list[dict], proportions: tuple[float, ...], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        SARMConfig(CLASSES, list(proportions), tasks=tasks)


# --- progress map and task selection ----------------------------------------------------------------


def test_two_task_progress_map_by_hand() -> None:
    model = SARM(two_tasks())
    # low: Σ ᾱ of the task's earlier stages; width: ᾱ; (0, 0) for classes outside the task.
    #                  reach grasp lift place move insert
    low = torch.tensor([[0.0, 0.2, 0.3, 0.6, 0.0, 0.0], [0.0, 0.1, 0.3, 0.0, 0.4, 0.6]])
    width = torch.tensor([[0.2, 0.1, 0.3, 0.4, 0.0, 0.0], [0.1, 0.2, 0.1, 0.0, 0.2, 0.4]])
    torch.testing.assert_close(model.progress_low, low)
    torch.testing.assert_close(model.progress_width, width)
    task, stage = torch.tensor([0, 1, 1, 0, 1, 0]), torch.tensor([3, 3, 5, 2, 1, 5])
    tau = torch.tensor([0.5, 0.5, 0.5, 1.0, 0.5, 0.7])
    torch.testing.assert_close(model.task_progress(task, stage, tau), torch.tensor([0.8, 0.0, 0.8, 0.6, 0.2, 0.0]))
    assert "task_text" in model.state_dict() and "progress_low" not in model.state_dict()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_single_task_map_equals_the_breakpoint_map_exactly(seed: int) -> None:
    rng = np.random.default_rng(seed)
    alpha = rng.dirichlet(np.ones(5)).tolist()
    model = SARM(SARMConfig.from_preset("small", list("abcde"), alpha, **SIZES)).eval()
    breakpoints = torch.tensor(stage_breakpoints(alpha), dtype=torch.float32)  # the map before multi-task
    stage, tau = torch.from_numpy(rng.integers(0, 5, 200)), torch.from_numpy(rng.random(200).astype(np.float32))

    def old_map(stage: torch.Tensor, tau: torch.Tensor) -> torch.Tensor:
        low, high = breakpoints[stage], breakpoints[stage + 1]
        return low + (high - low) * tau

    assert torch.equal(model.task_progress(torch.zeros_like(stage), stage, tau), old_map(stage, tau))
    gen = torch.Generator().manual_seed(seed)
    frames, text = torch.randn(4, L, 1, FRAME, generator=gen), torch.randn(4, TEXT, generator=gen)
    with torch.no_grad():
        pred = model.predict(frames, text, torch.tensor([9, 10, 12, 13]))
    assert torch.equal(pred.progress, old_map(pred.stage_probs.argmax(-1), pred.tau))


def test_the_instruction_selects_the_task() -> None:
    model, task_text = two_task_model()
    text = torch.stack([task_text[1], task_text[0], 3.0 * task_text[1], task_text[0] + 0.1 * task_text[1]])
    assert model.select_task(text).tolist() == [1, 0, 1, 0]
    torch.testing.assert_close(model.task_text.norm(dim=-1), torch.ones(2))
    gen = torch.Generator().manual_seed(5)
    frames = torch.randn(4, L, 1, FRAME, generator=gen)
    with torch.no_grad():
        pred = model.predict(frames, text, torch.tensor([9, 11, 13, 10]))
    stage = pred.stage_probs.argmax(-1)
    for row, task in enumerate([1, 0, 1, 0]):
        k = int(stage[row])
        expected = model.progress_low[task, k] + model.progress_width[task, k] * pred.tau[row]
        assert pred.progress[row].item() == pytest.approx(expected.item())
    with pytest.raises(ValueError, match=r"shape \(2, 8\)"):
        model.set_task_embeddings(torch.randn(3, TEXT))


def test_task_embeddings_travel_with_the_weights_and_old_checkpoints_load(tmp_path: Path) -> None:
    model, task_text = two_task_model()
    save_file(model.state_dict(), tmp_path / "model.safetensors")
    restored = SARM(two_tasks())
    restored.load_state_dict(load_file(tmp_path / "model.safetensors"))
    assert torch.equal(restored.task_text, model.task_text)
    assert restored.select_task(task_text).tolist() == [0, 1]
    # A multi-task checkpoint without task embeddings could not tell its tasks apart: refused.
    state = {k: v for k, v in model.state_dict().items() if k != "task_text"}
    with pytest.raises(RuntimeError, match="task_text"):
        SARM(two_tasks()).load_state_dict(state)

    # Single-task checkpoints written before tasks existed: `breakpoints` saved, no task embeddings.
    config = SARMConfig.from_preset("small", ["a", "b", "c"], [0.2, 0.3, 0.5], **SIZES)
    old = SARM(config).eval()
    legacy = {k: v for k, v in old.state_dict().items() if k != "task_text"}
    legacy["breakpoints"] = torch.tensor(stage_breakpoints(config.proportions), dtype=torch.float32)
    loaded = SARM(config).eval()
    loaded.load_state_dict(legacy)
    frames, text = torch.randn(2, L, 1, FRAME), torch.randn(2, TEXT)
    with torch.no_grad():
        for x, y in zip(
            old.predict(frames, text, torch.tensor([9, 13])),
            loaded.predict(frames, text, torch.tensor([9, 13])),
            strict=True,
        ):
            assert torch.equal(x, y)


def test_two_task_heads_export_to_onnx_and_match_pytorch(tmp_path: Path) -> None:
    model, task_text = two_task_model(seed=3)
    path = export_heads(model, tmp_path / "heads.onnx")
    gen = torch.Generator().manual_seed(7)
    frames = torch.randn(3, L, 1, FRAME, generator=gen)
    text = torch.stack([task_text[0], task_text[1] + 0.1 * torch.randn(TEXT, generator=gen), -task_text[0]])
    lengths = torch.tensor([[9], [13], [11]])
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    got = session.run(None, {"frames": frames.numpy(), "text": text.numpy(), "lengths": lengths.numpy()})
    with torch.no_grad():
        want = model.predict(frames, text, lengths[:, 0])
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g.reshape(w.shape), w.numpy(), atol=1e-5)
    # The rows go through both tasks' maps, which differ at every class: parity covers the selection.
    task = model.select_task(text)
    assert set(task.tolist()) == {0, 1}
    stage = want.stage_probs.argmax(-1)
    assert torch.all(model.task_progress(1 - task, stage, want.tau) != want.progress)


# --- data: vocabularies and training --------------------------------------------------------------------


def annotated(task: str, length: int, *spans: tuple[str, int, int]) -> EpisodeData:
    episode = synthetic_episode(length, 0, stages=tuple(name for name, _, _ in spans))
    return replace(episode, task=task, annotations={"sparse": EpisodeAnnotation(tuple(Subtask(*s) for s in spans))})


PICK = [
    annotated("pick", 20, ("reach", 0, 4), ("grasp", 4, 10), ("lift", 10, 20)),
    annotated("pick", 40, ("reach", 0, 8), ("grasp", 8, 20), ("lift", 20, 40)),
]
PEG = [
    annotated("peg", 20, ("reach", 0, 5), ("insert", 5, 20)),
    annotated("peg", 12, ("reach", 0, 3), ("insert", 3, 12)),
]


def test_label_vocabulary_of_datasets_with_different_vocabularies(tmp_path: Path) -> None:
    expected_tasks = [
        {"instruction": "pick", "stage_names": ["reach", "grasp", "lift"], "proportions": [0.2, 0.3, 0.5]},
        {"instruction": "peg", "stage_names": ["reach", "insert"], "proportions": [0.25, 0.75]},
    ]
    separate = [write_dataset(tmp_path / "pick", PICK), write_dataset(tmp_path / "peg", PEG)]
    mixed = [write_dataset(tmp_path / "mixed", [PICK[0], PEG[0], PICK[1], PEG[1]])]  # one dataset, two tasks
    for datasets in (separate, mixed):
        classes, tasks = label_vocabulary(datasets, "stage")
        assert classes == ["reach", "grasp", "lift", "insert"]
        assert [(t["instruction"], t["stage_names"]) for t in tasks] == [
            (t["instruction"], t["stage_names"]) for t in expected_tasks
        ]
        for got, want in zip(tasks, expected_tasks, strict=True):
            assert got["proportions"] == pytest.approx(want["proportions"])
        config = SARMConfig.from_preset("small", classes, tasks=tasks)
        assert config.class_proportions(1) == pytest.approx([0.25, 0.0, 0.0, 0.75])
    classes, tasks = label_vocabulary(separate, "frame-index")
    assert classes == ["task"]
    assert tasks == [{"instruction": i, "stage_names": ["task"], "proportions": [1.0]} for i in ("pick", "peg")]


@pytest.fixture(scope="module")
def two_embedded(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    root = tmp_path_factory.mktemp("multitask")
    frame, text = load_frame_encoder(), load_text_encoder()
    roots = []
    for name, task, stages in (
        ("pick", "pick up the cube", ("reach", "grasp", "lift")),
        ("peg", "insert the peg", ("reach", "insert")),
    ):
        episodes = [replace(synthetic_episode(20 + 3 * seed, seed, stages=stages), task=task) for seed in range(4)]
        if name == "peg":
            # Different tasks look different (a blue bar, not an orange one): training shows each video under
            # the other task's instruction with target 0, which identical videos would contradict.
            episodes = [replace(ep, frames={k: v[..., ::-1].copy() for k, v in ep.frames.items()}) for ep in episodes]
        ds = write_dataset(root / name, episodes)
        embed_dataset(ds, frame, text)
        roots.append(ds.root)
    return roots


def test_multi_task_training_lowers_the_loss(two_embedded: list[Path], tmp_path: Path) -> None:
    data = [Path(shutil.copytree(p, tmp_path / p.name)) for p in two_embedded]
    config = TrainConfig(
        datasets=data, out=tmp_path / "ckpt", steps=120, batch_size=16, eval_every=40, val_fraction=0.25, seed=3
    )
    result = train(config)
    model, info = load_checkpoint(tmp_path / "ckpt")
    assert info.model.stage_names == ["reach", "grasp", "lift", "insert"]
    assert [t["instruction"] for t in info.model.tasks] == ["pick up the cube", "insert the peg"]
    datasets = [LeRobotDataset(p) for p in data]
    embeddings = [load_embeddings(ds) for ds in datasets]
    texts = torch.from_numpy(np.stack([embeddings[0].text["pick up the cube"], embeddings[1].text["insert the peg"]]))
    torch.testing.assert_close(model.task_text, torch.nn.functional.normalize(texts, dim=-1))
    assert model.select_task(texts).tolist() == [0, 1]

    classes, _ = label_vocabulary(datasets, "stage")
    episodes = [
        e for ds, emb in zip(datasets, embeddings, strict=True) for e in episode_arrays(ds, emb, classes, "stage")
    ]
    batch = validation_batch(WindowSampler(episodes, embeddings[0].distractors), np.random.default_rng(0))
    torch.manual_seed(3)
    untrained = SARM(info.model)
    untrained.set_task_embeddings(texts)
    assert evaluate_batch(model, batch)["val_loss"] < 0.5 * evaluate_batch(untrained, batch)["val_loss"]
    assert result.history[-1]["val_loss"] < result.history[0]["val_loss"]

    # Stage accuracy on the peg data, whose class 1 ("insert") is the checkpoint's class 3: matched by name.
    metrics, _ = evaluate_checkpoint(tmp_path / "ckpt", datasets[1])
    proportions = datasets[1].proportions() or {}
    vocabulary = list(proportions)
    hits = []
    for meta in datasets[1].episodes:
        scores = score_embeddings(model, embeddings[1].frames[meta.index], texts[1].numpy(), stride=10)
        true_stage = ground_truth_progress(datasets[1], meta.index, proportions)[1]
        hits.append(np.array(classes)[scores.stage] == np.array(vocabulary)[true_stage])
    assert metrics["stage_accuracy"] == pytest.approx(np.concatenate(hits).mean())
    assert metrics["stage_accuracy"] > 0.5
