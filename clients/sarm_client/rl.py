"""SARM progress as the reward of a gymnasium environment (the `sarm-client[rl]` extra).

    from sarm_client.rl import SarmReward
    from sarm_client.rewards import RewardConfig

    env = SarmReward(gym.make(..., render_mode="rgb_array"), "localhost:50051", "Pick up the puck and place it at the "
                     "goal.", reward=RewardConfig(mode="delta", fallback=0.0))
    obs, info = env.reset(seed=0)          # opens the episode's stream and scores the first frame
    obs, reward, terminated, truncated, info = env.step(action)   # info["sarm_progress"], ["sarm_stage"], ...

`SarmVectorReward` does the same for a gymnasium vector environment, sending every sub-environment's frame in one
round trip per step (see sarm_client.episodes). The environment's own reward stays in `info["env_reward"]`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, SupportsFloat

import numpy as np

try:
    import gymnasium as gym
    from gymnasium.vector import AutoresetMode, VectorEnv, VectorWrapper
except ImportError as error:  # the module is the extra's: say how to get it
    raise ImportError("the RL reward wrappers need gymnasium: pip install 'sarm-client[rl]'") from error

from sarm_client.config import TLS, Retry, Timeout
from sarm_client.episodes import EpisodePool
from sarm_client.rewards import EpisodeReward, RewardConfig

ENV_REWARD_KEY = "env_reward"


def _fps(metadata: dict[str, Any], fps: float | None) -> float:
    if fps is not None:
        return fps
    rate = metadata.get("render_fps")
    if not rate:
        raise ValueError(
            "the environment's metadata has no render_fps: pass fps= (its control rate, frames per "
            "second), which sets the model's window stride"
        )
    return float(rate)


class SarmReward(gym.Wrapper[Any, Any, Any, Any]):
    """An environment whose reward is SARM's, computed by the gateway at `target` from the rendered frames.

    `frame(env)` picks the camera image (default: `env.render()`, so make the env with render_mode="rgb_array");
    frames not at the model's image size are resized by nearest neighbour (`resize=False` refuses them). `fps`
    defaults to the env's metadata["render_fps"]. `reward` says how scores become rewards and what a step gets
    when the gateway is down, slow or overloaded (sarm_client.rewards.RewardConfig); `timeout.step` bounds each
    step's wait, `timeout.call` the opening of an episode with its retries (`retry`).
    """

    def __init__(
        self,
        env: gym.Env[Any, Any],
        target: str,
        instruction: str,
        *,
        fps: float | None = None,
        reward: RewardConfig = RewardConfig(),
        frame: Callable[[Any], Any] | None = None,
        resize: bool = True,
        smoothing: bool = True,
        token: str | None = None,
        tls: TLS | bool = False,
        timeout: Timeout = Timeout(),
        retry: Retry = Retry(),
        episode_id: str = "",
    ) -> None:
        super().__init__(env)
        self.config = reward
        self._frame = frame or (lambda wrapped: wrapped.render())
        self._pool = EpisodePool(
            target,
            instruction,
            _fps(env.metadata, fps),
            token=token,
            tls=tls,
            timeout=timeout,
            retry=retry,
            smoothing=smoothing,
            resize=resize,
            episode_id=episode_id,
        )
        self._episode = EpisodeReward(reward)
        self._started = False

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
        obs, info = self.env.reset(seed=seed, options=options)
        [first] = self._pool.exchange({0: self._frame(self.env)}, {}).values()
        self._started = True
        return obs, {**info, **self._episode.start(first)}

    def step(self, action: Any) -> tuple[Any, SupportsFloat, bool, bool, dict[str, Any]]:
        if not self._started:
            raise gym.error.ResetNeeded("call reset() before step(): it opens the episode's stream")
        obs, env_reward, terminated, truncated, info = self.env.step(action)
        [scored] = self._pool.exchange({}, {0: self._frame(self.env)}).values()
        reward, extra = self._episode.step(scored)
        return obs, reward, terminated, truncated, {**info, **extra, ENV_REWARD_KEY: env_reward}

    def close(self) -> None:
        try:
            self._pool.close()
        finally:
            super().close()


class SarmVectorReward(VectorWrapper):
    """`SarmReward` for a vector environment: one episode stream per sub-environment, all stepped in one round
    trip. `frame(env)` returns every sub-environment's image (default: `env.render()`, a tuple). Autoreset must be
    NEXT_STEP (gymnasium's default; the step that resets a sub-environment scores its new first frame, reward 0)
    or DISABLED (reset with options={"reset_mask": mask}); SAME_STEP resets before the final frame can be rendered.
    The info holds each `sarm_*` key as an array over sub-environments, with its `_key` mask (gymnasium's vector
    info convention)."""

    def __init__(
        self,
        env: VectorEnv[Any, Any, Any],
        target: str,
        instruction: str,
        *,
        fps: float | None = None,
        reward: RewardConfig = RewardConfig(),
        frame: Callable[[Any], Sequence[Any]] | None = None,
        resize: bool = True,
        smoothing: bool = True,
        token: str | None = None,
        tls: TLS | bool = False,
        timeout: Timeout = Timeout(),
        retry: Retry = Retry(),
        episode_id: str = "",
    ) -> None:
        super().__init__(env)
        mode = AutoresetMode(env.metadata.get("autoreset_mode", AutoresetMode.NEXT_STEP))
        if mode is AutoresetMode.SAME_STEP:
            raise ValueError(
                "autoreset_mode SAME_STEP resets a finished sub-environment before its final frame can "
                "be rendered and scored: make the vector env with autoreset_mode=NEXT_STEP (or DISABLED)"
            )
        self.config, self._autoreset = reward, mode
        self._frame = frame or (lambda wrapped: wrapped.render())
        self._pool = EpisodePool(
            target,
            instruction,
            _fps(env.metadata, fps),
            size=env.num_envs,
            token=token,
            tls=tls,
            timeout=timeout,
            retry=retry,
            smoothing=smoothing,
            resize=resize,
            episode_id=episode_id,
        )
        self._episodes = [EpisodeReward(reward) for _ in range(env.num_envs)]
        self._done = np.zeros(env.num_envs, dtype=bool)  # sub-envs that finished at the last step
        self._started = np.zeros(env.num_envs, dtype=bool)

    def _frames(self) -> Sequence[Any]:
        frames = self._frame(self.env)
        if frames is None or len(frames) != self.num_envs:
            raise ValueError(
                f"frame(env) must return one image per sub-environment ({self.num_envs}): make the "
                "vector env with render_mode='rgb_array'"
            )
        return frames

    def reset(
        self, *, seed: int | list[int] | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Any, dict[str, Any]]:
        mask = (options or {}).get("reset_mask")  # read first: SyncVectorEnv pops it from the options
        reset: tuple[Any, dict[str, Any]] = super().reset(seed=seed, options=options)
        obs, info = reset
        restarted = range(self.num_envs) if mask is None else np.flatnonzero(mask).tolist()
        frames = self._frames()
        results = self._pool.exchange({i: frames[i] for i in restarted}, {})
        per_env: dict[int, dict[str, Any]] = {i: self._episodes[i].start(results[i]) for i in restarted}
        self._done[list(restarted)] = False
        self._started[list(restarted)] = True
        return obs, _with_vector_info(info, per_env, self.num_envs)

    def step(self, actions: Any) -> tuple[Any, Any, Any, Any, dict[str, Any]]:
        if not self._started.all():
            raise gym.error.ResetNeeded("call reset() before step(): it opens the episodes' streams")
        obs, env_rewards, terminations, truncations, info = self.env.step(actions)
        frames = self._frames()
        # NEXT_STEP: this step reset the sub-envs that finished at the last one, and rendered their new first frame.
        restarted = np.flatnonzero(self._done).tolist() if self._autoreset is AutoresetMode.NEXT_STEP else []
        stepped = [i for i in range(self.num_envs) if i not in restarted]
        results = self._pool.exchange({i: frames[i] for i in restarted}, {i: frames[i] for i in stepped})
        rewards = np.zeros(self.num_envs, dtype=np.float64)
        per_env: dict[int, dict[str, Any]] = {}
        for i in restarted:
            per_env[i] = self._episodes[i].start(results[i])
        for i in stepped:
            rewards[i], per_env[i] = self._episodes[i].step(results[i])
        self._done = np.logical_or(terminations, truncations)
        info = _with_vector_info(info, per_env, self.num_envs)
        info[ENV_REWARD_KEY] = np.asarray(env_rewards)
        return obs, rewards, terminations, truncations, info

    def close(self, **kwargs: Any) -> None:
        try:
            self._pool.close()
        finally:
            self.env.close(**kwargs)


def _with_vector_info(info: dict[str, Any], per_env: dict[int, dict[str, Any]], size: int) -> dict[str, Any]:
    """`info` plus each per-environment key as an array over the sub-environments, and its `_key` mask."""
    info = dict(info)
    keys = dict.fromkeys(key for values in per_env.values() for key in values)
    for key in keys:
        present = [i for i in range(size) if key in per_env.get(i, {})]
        sample = per_env[present[0]][key]
        dtype: Any = object if isinstance(sample, str) else type(sample)
        array = np.zeros(size, dtype=dtype) if dtype is not object else np.full(size, "", dtype=object)
        if dtype is float:
            array[:] = np.nan
        for i in present:
            array[i] = per_env[i][key]
        info[key] = array
        info[f"_{key}"] = np.isin(np.arange(size), present)
    return info
