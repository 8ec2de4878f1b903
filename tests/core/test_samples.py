"""What the training sampler produces: rewinds that go back in time with falling targets, and
wrong-instruction windows whose every target is zero (LeRobot's SARM shipped bugs in exactly these)."""

from __future__ import annotations

import numpy as np
import pytest

from sarm.data.annotations import EpisodeAnnotation, Subtask
from sarm.model.labels import stage_tau_labels
from sarm.model.windows import WINDOW_FRAMES
from sarm.training.samples import Batch, EpisodeArrays, WindowSampler

STAGES = ["reach", "grasp", "lift", "place"]
FRAME_DIM, TEXT_DIM = 6, 5
MW_STRIDE = 80  # 1 s at Meta-World's 80 fps: every generated demo (1–6 s) is younger than the 8 s window


def episode(length: int, seed: int, stride: int = MW_STRIDE, text: float = 1.0) -> EpisodeArrays:
    """An episode with contiguous stages (so y = k + τ rises every frame) and frame embeddings that name
    their own frame index in column 0 and the episode in column 1, so a batch shows which frames it gathered."""
    bounds = np.linspace(0, length, len(STAGES) + 1).round().astype(int)
    annotation = EpisodeAnnotation(
        tuple(Subtask(name, int(s), int(e)) for name, s, e in zip(STAGES, bounds[:-1], bounds[1:], strict=True))
    )
    frames = np.zeros((length, 1, FRAME_DIM), np.float32)
    frames[:, 0, 0] = np.arange(length)
    frames[:, 0, 1] = seed
    return EpisodeArrays(
        dataset="synthetic",
        episode=seed,
        frames=frames,
        text=np.full(TEXT_DIM, text, np.float32),
        labels=stage_tau_labels(annotation, length, STAGES),
        stride=stride,
        success=True,
        quality="clean",
    )


def short_episodes(n: int = 40, seed: int = 0) -> list[EpisodeArrays]:
    """Meta-World-like lengths: 1–6 s at 80 fps."""
    lengths = np.random.default_rng(seed).integers(80, 480, n)
    return [episode(int(length), i) for i, length in enumerate(lengths)]


def distractors(n: int = 16) -> np.ndarray:
    return -np.arange(1, n + 1, dtype=np.float32)[:, None] * np.ones(TEXT_DIM, np.float32)


def frame_indices(batch: Batch) -> np.ndarray:
    return batch.frames[:, :, 0, 0].numpy().astype(np.int64)


def targets(batch: Batch) -> np.ndarray:
    return (batch.stage.float() + batch.tau).numpy()


def test_rewinds_step_back_in_time_and_their_targets_fall() -> None:
    sampler = WindowSampler(short_episodes(), distractors(), rewind_p=1.0, wrong_instruction_p=0.0)
    batch = sampler.sample(512, np.random.default_rng(1))
    index, y, lengths = frame_indices(batch), targets(batch), batch.lengths.numpy()
    rewound = lengths > WINDOW_FRAMES
    assert rewound.mean() > 0.95  # all but the few windows of t < 8 frames
    for row in np.flatnonzero(rewound):
        n = lengths[row] - WINDOW_FRAMES
        back = index[row, WINDOW_FRAMES - 1 : WINDOW_FRAMES + n]  # t, then the rewound frames
        assert np.all(np.diff(back) < 0), back
        assert np.all(np.diff(y[row, WINDOW_FRAMES - 1 : WINDOW_FRAMES + n]) < 0)
        # The rewound frames are the window's own middle frames, newest first.
        assert back[1:].tolist() == index[row, WINDOW_FRAMES - 2 : WINDOW_FRAMES - 2 - n : -1].tolist()
        # Padding repeats the last valid frame and its target.
        assert np.all(index[row, WINDOW_FRAMES + n :] == back[-1])
    # Every rewind length 1..4 occurs.
    assert set((lengths[rewound] - WINDOW_FRAMES).tolist()) == {1, 2, 3, 4}


def test_rewound_frames_are_almost_never_the_start_frame_on_short_episodes() -> None:
    # The old rule (t − k·g clamped at the start) made 71–91 % of these frame 0 on Meta-World demos.
    sampler = WindowSampler(short_episodes(), distractors(), rewind_p=0.8, wrong_instruction_p=0.0)
    batch = sampler.sample(2048, np.random.default_rng(2))
    index, lengths = frame_indices(batch), batch.lengths.numpy()
    rewound = np.concatenate([index[r, WINDOW_FRAMES : lengths[r]] for r in range(len(lengths))])
    assert len(rewound) > 2048  # p = 0.8 with 1–4 frames each: about 4000
    assert np.mean(rewound == 0) < 0.01
    assert 0.7 < np.mean(lengths > WINDOW_FRAMES) < 0.9


def test_windows_shorter_than_eight_frames_do_not_rewind() -> None:
    sampler = WindowSampler([episode(200, 0)], distractors(), rewind_p=1.0, wrong_instruction_p=0.0)
    t = np.arange(12)
    rewinds = np.full(12, 3)
    # batch() takes the rewinds it is given; sample() is what decides who rewinds: emulate it on t < 8.
    batch = sampler.batch(np.zeros(12, np.int64), t, np.where(t >= 8, rewinds, 0), np.full(12, -1))
    assert batch.lengths.tolist() == [9] * 8 + [12] * 4
    rng = np.random.default_rng(3)
    for _ in range(20):
        b = WindowSampler([episode(7, 0)], distractors(), rewind_p=1.0, wrong_instruction_p=0.0).sample(16, rng)
        assert b.lengths.tolist() == [9] * 16


def test_wrong_instruction_windows_have_every_target_zeroed() -> None:
    sampler = WindowSampler(short_episodes(), distractors(), rewind_p=0.8, wrong_instruction_p=1.0)
    batch = sampler.sample(256, np.random.default_rng(4))
    assert np.all(batch.stage.numpy() == 0) and np.all(batch.tau.numpy() == 0)
    text = batch.text.numpy()
    assert not np.any(np.all(text == 1.0, axis=1))  # never the episode's own instruction
    assert np.any(batch.lengths.numpy() > WINDOW_FRAMES)  # rewinds still happen on top, also zeroed


def test_own_instruction_windows_carry_their_frames_targets() -> None:
    eps = short_episodes(8)
    sampler = WindowSampler(eps, distractors(), rewind_p=0.8, wrong_instruction_p=0.0)
    batch = sampler.sample(128, np.random.default_rng(5))
    assert np.all(batch.text.numpy() == 1.0)
    index, y = frame_indices(batch), targets(batch)
    owner = batch.frames[:, :, 0, 1].numpy().astype(np.int64)
    # Frames name their frame and episode, so the target of every position can be looked up again.
    for row in range(128):
        assert len(set(owner[row].tolist())) == 1
        np.testing.assert_allclose(y[row], eps[owner[row, 0]].labels.target[index[row]], atol=1e-6)


@pytest.mark.parametrize("p", [0.0, 0.2, 0.5])
def test_wrong_instruction_rate_follows_p(p: float) -> None:
    sampler = WindowSampler(short_episodes(), distractors(), rewind_p=0.0, wrong_instruction_p=p)
    batch = sampler.sample(4000, np.random.default_rng(6))
    wrong = ~np.all(batch.text.numpy() == 1.0, axis=1)
    assert abs(wrong.mean() - p) < 0.03


# --- wrong instructions: distractors and other tasks' instructions ------------------------------------


def two_task_episodes() -> list[EpisodeArrays]:
    lengths = np.random.default_rng(7).integers(80, 480, 20)
    return [episode(int(length), i, text=1.0 + i % 2) for i, length in enumerate(lengths)]


def test_other_tasks_instructions_are_negatives_of_a_multi_task_run() -> None:
    eps = two_task_episodes()
    sampler = WindowSampler(eps, distractors(), rewind_p=0.0, wrong_instruction_p=1.0, cross_task_p=1.0)
    assert sampler.num_tasks == 2
    batch = sampler.sample(512, np.random.default_rng(8))
    owner = batch.frames[:, 0, 0, 1].numpy().astype(np.int64)
    own_text = np.array([eps[o].text[0] for o in owner])
    text = batch.text.numpy()[:, 0]
    assert np.all(text == 3.0 - own_text)  # always the other task's instruction
    assert np.all(batch.stage.numpy() == 0) and np.all(batch.tau.numpy() == 0)


def test_wrong_instructions_mix_distractors_and_other_tasks_and_vary_per_window() -> None:
    sampler = WindowSampler(two_task_episodes(), distractors(), rewind_p=0.0, wrong_instruction_p=1.0)
    text = sampler.sample(2000, np.random.default_rng(9)).text.numpy()[:, 0]
    cross = text > 0
    assert 0.45 < cross.mean() < 0.55  # cross_task_p = 0.5
    assert set(np.unique(text[~cross]).tolist()) == set(distractors()[:, 0].tolist())  # all 16 used


def test_a_single_task_run_draws_only_distractors() -> None:
    sampler = WindowSampler(short_episodes(10), distractors(), rewind_p=0.0, wrong_instruction_p=1.0, cross_task_p=1.0)
    assert sampler.num_tasks == 1
    assert np.all(sampler.sample(500, np.random.default_rng(10)).text.numpy() < 0)


def test_a_window_cannot_be_its_own_negative() -> None:
    sampler = WindowSampler(two_task_episodes(), distractors(), wrong_instruction_p=1.0)
    own = sampler.num_distractors + 0  # episode 0 holds the first (smallest) instruction, 1.0
    with pytest.raises(ValueError, match="own instruction"):
        sampler.batch(np.array([0]), np.array([50]), np.array([0]), np.array([own]))
    sampler.batch(np.array([0]), np.array([50]), np.array([0]), np.array([own + 1]))
