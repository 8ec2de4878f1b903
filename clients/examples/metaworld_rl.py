"""Dense rewards for a Meta-World environment from the default SARM model (`make serve`), with sarm_client.rl.

    MUJOCO_GL=egl python clients/examples/metaworld_rl.py --target localhost:50051 --task pick-place-v3

Runs Meta-World's scripted expert for one episode and prints each step's SARM reward, stage and progress beside
the environment's own reward. The camera is the one the default model was trained on: `corner4`, 128x128, shadows
and reflections off, turned by 180 degrees (the camera is mounted upside down). Needs metaworld (and so mujoco)
and `sarm-client[rl]`; `make_env` and `expert` are what tests/client/test_client_rl.py and bench/client_rl.py use.
"""

from __future__ import annotations

import os

os.environ.setdefault("MUJOCO_GL", "egl")  # headless offscreen rendering; read when mujoco is first imported

import argparse
import warnings
from collections.abc import Callable
from typing import Any

import gymnasium as gym
import mujoco
import numpy as np
from metaworld.env_dict import ALL_V3_ENVIRONMENTS_GOAL_OBSERVABLE
from metaworld.policies import ENV_POLICY_MAP

from sarm_client.rewards import RewardConfig
from sarm_client.rl import SarmReward

# The default model's tasks and the instructions it was trained with (model_repo/default/MODEL_CARD.md).
INSTRUCTIONS = {
    "pick-place-v3": "Pick up the puck and place it at the goal.",
    "assembly-v3": "Pick up the nut and put it onto the peg.",
    "peg-insert-side-v3": "Pick up the peg and insert it sideways into the hole.",
}
CAMERA = "corner4"
FPS = 80  # one frame per env step: Meta-World steps 12.5 ms


class CornerCamera(gym.Wrapper[Any, Any, Any, Any]):
    """`render()` returns the corner4 camera's RGB image at `size` x `size`, as the default model saw it."""

    def __init__(self, env: gym.Env[Any, Any], size: int = 128) -> None:
        super().__init__(env)
        model = env.unwrapped.model  # type: ignore[attr-defined]
        model.vis.quality.offsamples = 0  # no multisampling, no shadow map: set before the GL context exists
        model.vis.quality.shadowsize = 0
        self._renderer = mujoco.Renderer(model, size, size)
        for flag in (mujoco.mjtRndFlag.mjRND_SHADOW, mujoco.mjtRndFlag.mjRND_REFLECTION):
            self._renderer.scene.flags[flag] = 0
        self.metadata = {**env.metadata, "render_fps": FPS, "render_modes": ["rgb_array"]}

    def render(self) -> np.ndarray:
        self._renderer.update_scene(self.env.unwrapped.data, camera=CAMERA)  # type: ignore[attr-defined]
        return np.ascontiguousarray(self._renderer.render()[::-1, ::-1])

    def close(self) -> None:
        self._renderer.close()
        super().close()


class SeededReset(gym.Wrapper[Any, Any, Any, Any]):
    """`reset(seed=s)` seeds the Meta-World env (its np_random and spaces) with `s`, as gymnasium promises.

    Meta-World's own `reset` ignores its seed (only `env.seed()` seeds), so without this every reset drew its
    object and goal layout from an unseeded generator: `reset(seed=0)` gave a different episode each run."""

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
        if seed is not None:
            self.env.unwrapped.seed(seed)  # type: ignore[attr-defined]
        return self.env.reset(seed=seed, options=options)


def make_env(task: str = "pick-place-v3", max_steps: int = 300, size: int = 128) -> gym.Env[Any, Any]:
    """A Meta-World task whose object and goal layout is drawn from the seed at each reset, `max_steps` long:
    `reset(seed=s)` gives the same episode every time; a reset without a seed draws a new layout from the same
    generator."""
    env = ALL_V3_ENVIRONMENTS_GOAL_OBSERVABLE[f"{task}-goal-observable"]()
    env._freeze_rand_vec = False  # a new layout at every reset, drawn from env.np_random (seeded by SeededReset)
    env.seeded_rand_vec = True
    env.render_mode = "rgb_array"  # what CornerCamera.render returns (Meta-World's own renderer is never used)
    return CornerCamera(gym.wrappers.TimeLimit(SeededReset(env), max_steps), size)


def expert(task: str) -> Callable[[np.ndarray], np.ndarray]:
    """Meta-World's scripted policy for `task`: observation → action."""
    make: Callable[[], Any] = ENV_POLICY_MAP[task]
    policy = make()

    def act(obs: np.ndarray) -> np.ndarray:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # the experts warn on every saturated action
            return np.clip(policy.get_action(obs), -1.0, 1.0).astype(np.float32)

    return act


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", default="localhost:50051", help="the gateway's gRPC HOST:PORT")
    parser.add_argument("--task", default="pick-place-v3", choices=sorted(INSTRUCTIONS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--mode", default="delta", choices=("delta", "progress", "success_bonus"))
    args = parser.parse_args()
    env = SarmReward(
        make_env(args.task), args.target, INSTRUCTIONS[args.task], reward=RewardConfig(mode=args.mode, fallback=0.0)
    )
    act = expert(args.task)
    obs, info = env.reset(seed=args.seed)
    total, done, t = 0.0, False, 0
    print(f"{'step':>4} {'reward':>8} {'progress':>8} {'stage':<8} {'env_reward':>10} success")
    while not done:
        obs, reward, terminated, truncated, info = env.step(act(obs))
        total, done, t = total + float(reward), terminated or truncated, t + 1
        print(
            f"{t:>4} {float(reward):>8.4f} {info['sarm_progress']:>8.3f} {info['sarm_stage']:<8} "
            f"{info['env_reward']:>10.3f} {bool(info['success'])}"
        )
    print(f"episode return {total:.3f}")
    env.close()


if __name__ == "__main__":
    main()
