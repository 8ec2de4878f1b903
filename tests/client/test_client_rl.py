"""sarm_client.rl: SARM progress as an environment's reward. The reward rules on their own, then the gymnasium
wrappers against a real gateway (tests/gateway_harness.py): rewards are the gateway's curve, a vector env's frames
go out together, and a gateway that is down, slow or overloaded gives a clear error or the fallback, never a hang;
last, a Meta-World env whose dense reward comes from the default model."""

from __future__ import annotations

import importlib.util
import math
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
import pytest

from sarm.encoders.base import TextEncoder
from sarm_client import (
    NO_RETRY,
    DeadlineExceeded,
    FrameScore,
    InvalidArgument,
    Overloaded,
    SarmClient,
    Score,
    ScoringOptions,
    Timeout,
    Unavailable,
)
from sarm_client.frames import fit
from sarm_client.rewards import EpisodeReward, RewardConfig, progress_of
from sarm_client.rl import SarmReward, SarmVectorReward
from tests.client_harness import CLIENT_ROOT, target
from tests.gateway_harness import INSTRUCTION, TIMEOUT, H, RunningGateway, episode_frames, free_port

FPS = 4.0
CLIENT_TIMEOUT = Timeout(call=TIMEOUT, step=TIMEOUT, episode=TIMEOUT)
DEFAULT_REPO = Path(__file__).resolve().parents[2] / ".cache" / "model_repo" / "default"


def frame_score(progress: float, smoothed: float | None = None, stage: str = "grasp") -> FrameScore:
    score = Score(
        stage_index=1,
        stage_name=stage,
        stage_probs=(0.1, 0.9),
        tau=0.5,
        progress=progress,
        confidence=0.9,
        model_version="v",
    )
    return FrameScore(frame_index=0, score=score, smoothed_progress=smoothed)


# ---- the reward rules ---------------------------------------------------------------------------------------------


def test_delta_rewards_add_up_to_the_progress_gained() -> None:
    episode = EpisodeReward(RewardConfig())
    info = episode.start(frame_score(0.2))
    assert info["sarm_progress"] == 0.2 and info["sarm_stage"] == "grasp" and info["sarm_confidence"] == 0.9
    rewards = [episode.step(frame_score(p))[0] for p in (0.3, 0.25, 0.7)]
    assert rewards == pytest.approx([0.1, -0.05, 0.45])  # a regression is a negative reward
    assert sum(rewards) == pytest.approx(0.7 - 0.2)
    episode.start(frame_score(0.6))  # a new episode starts from its own first frame
    assert episode.step(frame_score(0.65))[0] == pytest.approx(0.05)


def test_progress_and_success_bonus_modes() -> None:
    progress = EpisodeReward(RewardConfig(mode="progress"))
    progress.start(frame_score(0.1))
    assert progress.step(frame_score(0.4))[0] == pytest.approx(0.4)
    bonus = EpisodeReward(RewardConfig(mode="success_bonus", success_threshold=0.8, success_bonus=2.0))
    bonus.start(frame_score(0.1))
    assert bonus.step(frame_score(0.5))[0] == pytest.approx(0.5)
    reward, info = bonus.step(frame_score(0.85))
    assert reward == pytest.approx(2.85) and info["sarm_success"] is True
    smoothed = EpisodeReward(RewardConfig(mode="progress"))  # a smoothing stream's reward is the smoothed progress
    smoothed.start(frame_score(0.1, smoothed=0.1))
    assert smoothed.step(frame_score(0.9, smoothed=0.3))[0] == pytest.approx(0.3)


def test_a_failed_step_raises_or_gets_the_fallback() -> None:
    down = Unavailable("connection refused")
    with pytest.raises(Unavailable):
        EpisodeReward(RewardConfig()).step(down)
    episode = EpisodeReward(RewardConfig(fallback=-0.5))
    info = episode.start(down)
    assert math.isnan(info["sarm_progress"]) and "Unavailable: connection refused" in info["sarm_error"]
    reward, info = episode.step(down)
    assert reward == -0.5 and info["sarm_stage"] == ""
    with pytest.raises(InvalidArgument):  # a request that can never be served is no outage: it always raises
        episode.step(InvalidArgument("frame 0: expected 48x64"))


@pytest.mark.parametrize(
    "bad", [{"mode": "sparse"}, {"success_threshold": 0.0}, {"fallback": math.nan}, {"success_bonus": math.inf}]
)
def test_reward_settings_are_checked(bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        RewardConfig(**bad)


def test_frames_are_fitted_to_the_model_or_refused() -> None:
    frame = np.arange(96 * 128 * 3, dtype=np.uint32).astype(np.uint8).reshape(96, 128, 3)
    np.testing.assert_array_equal(fit(frame, (48, 64)), frame[1::2, 1::2])
    assert fit(frame, (96, 128)) is frame
    with pytest.raises(InvalidArgument, match="render at the model's size"):
        fit(frame, (48, 64), resize=False)
    with pytest.raises(InvalidArgument, match="render_mode='rgb_array'"):
        fit(None, (48, 64))
    with pytest.raises(InvalidArgument, match="float32"):
        fit(frame.astype(np.float32), (48, 64))


# ---- the wrappers on a real gateway -------------------------------------------------------------------------------


class FilmEnv(gym.Env[int, int]):
    """An environment that shows a fixed film: each step advances one frame; the episode ends at its last frame.
    A reset with a new seed shows another film (`films`: seed -> frames)."""

    metadata: ClassVar[dict[str, Any]] = {"render_fps": FPS, "render_modes": ["rgb_array"]}
    render_mode = "rgb_array"

    def __init__(self, length: int, scale: int = 1) -> None:
        self.length, self.scale = length, scale
        self.observation_space = gym.spaces.Discrete(100)
        self.action_space = gym.spaces.Discrete(2)
        self.film = episode_frames(length, 0)
        self.t = 0

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[int, dict[str, Any]]:
        super().reset(seed=seed)
        self.film = episode_frames(self.length, int(self.np_random.integers(1 << 30)))
        self.t = 0
        return 0, {}

    def step(self, action: int) -> tuple[int, float, bool, bool, dict[str, Any]]:
        self.t += 1
        return self.t, 10.0 + self.t, self.t == self.length - 1, False, {"t": self.t}

    def render(self) -> np.ndarray:
        frame = self.film[self.t]
        return np.repeat(np.repeat(frame, self.scale, axis=0), self.scale, axis=1) if self.scale > 1 else frame


@pytest.fixture
def client(served: RunningGateway) -> Iterator[SarmClient]:
    with SarmClient(target(served), timeout=CLIENT_TIMEOUT) as made:
        yield made


def curve(client: SarmClient, frames: np.ndarray, smoothing: bool = True) -> list[float]:
    """The progress rewards are made of: smoothed, as the wrappers' streams are unless told otherwise."""
    scores = client.score_frames(INSTRUCTION, frames, FPS, options=ScoringOptions(smoothing=smoothing))
    return [progress_of(s) for s in scores]


def test_each_step_is_rewarded_with_the_gateways_progress(served: RunningGateway, client: SarmClient) -> None:
    env = SarmReward(FilmEnv(8), target(served), INSTRUCTION, timeout=CLIENT_TIMEOUT)
    try:
        _, info = env.reset(seed=3)
        progress, rewards = [info["sarm_progress"]], []
        for _ in range(7):
            _, reward, terminated, _, info = env.step(0)
            progress.append(info["sarm_progress"])
            rewards.append(reward)
            assert info["t"] == len(progress) - 1 and info["env_reward"] == 10.0 + info["t"]
            assert {"sarm_stage", "sarm_tau", "sarm_confidence"} <= info.keys()
        assert terminated
        expected = curve(client, env.unwrapped.film)  # type: ignore[attr-defined]
        np.testing.assert_allclose(progress, expected, atol=1e-5)
        np.testing.assert_allclose(rewards, np.diff(expected), atol=1e-5)
        _, info = env.reset(seed=4)  # a new stream: the new film's first frame is frame 0 again
        assert info["sarm_progress"] == pytest.approx(curve(client, env.unwrapped.film[:1])[0], abs=1e-5)  # type: ignore[attr-defined]
    finally:
        env.close()


def test_without_smoothing_the_reward_is_the_raw_progress(served: RunningGateway, client: SarmClient) -> None:
    env = SarmReward(FilmEnv(6), target(served), INSTRUCTION, timeout=CLIENT_TIMEOUT, smoothing=False)
    try:
        _, info = env.reset(seed=5)
        progress = [info["sarm_progress"]] + [env.step(0)[4]["sarm_progress"] for _ in range(5)]
        raw = curve(client, env.unwrapped.film, smoothing=False)  # type: ignore[attr-defined]
        np.testing.assert_allclose(progress, raw, atol=1e-5)
        assert not np.allclose(raw, curve(client, env.unwrapped.film), atol=1e-6)  # type: ignore[attr-defined]
    finally:
        env.close()


def test_a_vector_env_rewards_every_sub_env_and_restarts_finished_ones(
    served: RunningGateway, client: SarmClient
) -> None:
    lengths = (4, 6, 9)
    # The middle sub-env renders at twice the model's size: the wrapper resizes it like frames.fit does.
    vector = gym.vector.SyncVectorEnv([lambda n=n, s=s: FilmEnv(n, s) for n, s in zip(lengths, (1, 2, 1), strict=True)])
    env = SarmVectorReward(
        vector, target(served), INSTRUCTION, reward=RewardConfig(mode="progress"), timeout=CLIENT_TIMEOUT
    )
    try:
        _, info = env.reset(seed=10)
        seen: list[list[list[float]]] = [[[p]] for p in info["sarm_progress"]]  # per sub-env: episodes of progress
        films: list[list[np.ndarray]] = [[sub.film] for sub in vector.envs]  # type: ignore[attr-defined]
        for _ in range(10):
            _, rewards, _, _, info = env.step(np.zeros(3, dtype=np.int64))
            assert info["_sarm_progress"].all() and info["env_reward"].shape == (3,)
            for i, sub in enumerate(vector.envs):
                if sub.film is not films[i][-1]:  # type: ignore[attr-defined]  # autoreset: a new episode began
                    films[i].append(sub.film)  # type: ignore[attr-defined]
                    seen[i].append([])
                    assert rewards[i] == 0.0
                else:
                    assert rewards[i] == pytest.approx(info["sarm_progress"][i])
                seen[i][-1].append(float(info["sarm_progress"][i]))
        for i in range(3):
            assert len(films[i]) >= 2  # every sub-env finished an episode and started another
            for film, progress in zip(films[i], seen[i], strict=True):
                sent = film[:, 1::2, 1::2] if i == 1 and film.shape[1] != H else film
                np.testing.assert_allclose(progress, curve(client, sent[: len(progress)]), atol=1e-5)
    finally:
        env.close()


def test_a_vector_step_sends_every_sub_envs_frame_at_once(cpu_model_repo: Path, text_encoder: TextEncoder) -> None:
    running = RunningGateway(cpu_model_repo, text_encoder, gated=True, max_batch_size=64)
    env = SarmVectorReward(
        gym.vector.SyncVectorEnv([lambda: FilmEnv(5)] * 4), target(running), INSTRUCTION, timeout=CLIENT_TIMEOUT
    )
    try:
        resetting = threading.Thread(target=env.reset, kwargs={"seed": 0})
        resetting.start()
        deadline = time.monotonic() + TIMEOUT
        # The encoder holds every frame, so no reply can come back: four streams open at once means the four
        # sub-envs' first frames went out together, not one after another's reply.
        while running.gateway.service.streams.in_flight < 4:
            assert time.monotonic() < deadline, "the sub-envs' streams did not open together"
            time.sleep(0.01)
        time.sleep(1.0)  # their frames reach the encoder's queue
        running.open_gate()
        resetting.join(TIMEOUT)
        assert not resetting.is_alive()
        assert running.backend.encoded == 4 and running.backend.encode_calls < 4  # batched: in flight together
    finally:
        running.open_gate()
        env.close()
        running.close()


def test_same_step_autoreset_is_refused(served: RunningGateway) -> None:
    vector = gym.vector.SyncVectorEnv([lambda: FilmEnv(4)], autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
    with pytest.raises(ValueError, match="NEXT_STEP"):
        SarmVectorReward(vector, target(served), INSTRUCTION)


def test_a_gateway_that_is_down_raises_or_gives_the_fallback() -> None:
    nowhere = f"127.0.0.1:{free_port()}"
    started = time.monotonic()
    env = SarmReward(FilmEnv(4), nowhere, INSTRUCTION, retry=NO_RETRY)
    with pytest.raises(Unavailable):
        env.reset(seed=0)
    env.close()
    env = SarmReward(FilmEnv(4), nowhere, INSTRUCTION, reward=RewardConfig(fallback=0.0), retry=NO_RETRY)
    _, info = env.reset(seed=0)
    assert info["sarm_error"].startswith("UNAVAILABLE")
    _, reward, _, _, info = env.step(0)
    assert reward == 0.0 and info["sarm_error"].startswith("UNAVAILABLE") and info["env_reward"] == 11.0
    env.close()
    assert time.monotonic() - started < 10.0  # refused at once, not after some long default deadline


def test_a_slow_gateway_is_a_deadline_not_a_hang(gated: RunningGateway) -> None:
    quick = Timeout(call=1.0, step=0.3)
    env = SarmReward(FilmEnv(4), target(gated), INSTRUCTION, timeout=quick)
    started = time.monotonic()
    with pytest.raises(DeadlineExceeded):
        env.reset(seed=0)
    assert time.monotonic() - started < 5.0
    env.close()
    vector = gym.vector.SyncVectorEnv([lambda: FilmEnv(4)] * 2)
    env2 = SarmVectorReward(vector, target(gated), INSTRUCTION, timeout=quick, reward=RewardConfig(fallback=-1.0))
    _, info = env2.reset(seed=0)
    assert list(info["sarm_error"]) == [info["sarm_error"][0]] * 2 and "DEADLINE_EXCEEDED" in info["sarm_error"][0]
    _, rewards, _, _, info = env2.step(np.zeros(2, dtype=np.int64))  # the failed streams answer at once
    assert list(rewards) == [-1.0, -1.0] and np.isnan(info["sarm_progress"]).all()
    env2.close()


def test_an_overloaded_gateway_is_retried_then_refused(cpu_model_repo: Path, text_encoder: TextEncoder) -> None:
    running = RunningGateway(cpu_model_repo, text_encoder, max_streams=1)
    try:
        vector = gym.vector.SyncVectorEnv([lambda: FilmEnv(4)] * 2)
        env = SarmVectorReward(
            vector,
            target(running),
            INSTRUCTION,
            timeout=Timeout(call=1.0, step=TIMEOUT),
            reward=RewardConfig(fallback=0.0),
        )
        started = time.monotonic()
        _, info = env.reset(seed=0)
        # One sub-env got the only stream; the other was refused, retried until Timeout.call, and fell back.
        assert sorted(np.isnan(info["sarm_progress"])) == [False, True]
        refused = int(np.flatnonzero(np.isnan(info["sarm_progress"]))[0])
        assert "RESOURCE_EXHAUSTED" in info["sarm_error"][refused] and time.monotonic() - started < 5.0
        env.close()
        env1 = SarmReward(FilmEnv(4), target(running), INSTRUCTION)  # retried while the last streams close
        env1.reset(seed=1)  # holds the only stream
        env2 = SarmReward(FilmEnv(4), target(running), INSTRUCTION, retry=NO_RETRY)
        with pytest.raises(Overloaded):
            env2.reset(seed=2)
        env1.close()
        env2.close()
    finally:
        running.close()


# ---- Meta-World with the default model ----------------------------------------------------------------------------


def example() -> ModuleType:
    """clients/examples/metaworld_rl.py: the env factory and expert the example runs."""
    spec = importlib.util.spec_from_file_location("metaworld_rl", CLIENT_ROOT / "examples" / "metaworld_rl.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_a_metaworld_expert_earns_the_default_models_dense_reward(text_encoder: TextEncoder) -> None:
    pytest.importorskip("metaworld")
    if not (DEFAULT_REPO / "sarm_manifest.json").exists():
        pytest.skip(f"the default model repository is not exported to {DEFAULT_REPO} (make setup)")
    metaworld = example()
    task = "pick-place-v3"
    running = RunningGateway(DEFAULT_REPO, text_encoder)
    env = SarmReward(
        metaworld.make_env(task, max_steps=80), target(running), metaworld.INSTRUCTIONS[task], timeout=CLIENT_TIMEOUT
    )
    try:
        act = metaworld.expert(task)
        obs, info = env.reset(seed=0)
        first, rewards, stages, succeeded = info["sarm_progress"], [], [info["sarm_stage"]], False
        done = False
        while not done:
            obs, reward, terminated, truncated, info = env.step(act(obs))
            rewards.append(reward)
            stages.append(info["sarm_stage"])
            succeeded = succeeded or bool(info["success"])
            done = terminated or truncated
        assert succeeded  # the simulator's own verdict: the expert placed the puck
        assert first < 0.3 and info["sarm_progress"] > 0.85  # SARM saw the task done too
        assert sum(rewards) == pytest.approx(info["sarm_progress"] - first, abs=1e-4)  # delta rewards telescope
        assert sum(r != 0 for r in rewards) > 0.9 * len(rewards)  # dense: nearly every step moves the reward
        # The stages come in the task's order: the last one reached is "place", after reach and lift.
        assert stages[0] == "reach" and stages[-1] == "place" and "lift" in stages
    finally:
        env.close()
        running.close()
