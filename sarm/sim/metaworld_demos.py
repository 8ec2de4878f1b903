"""Mixed-quality Meta-World demonstrations from the package's own scripted experts, held in memory.

Each episode is first rolled out without rendering (~1 ms a step), accepted or retried with a fresh
layout, and only then rendered from the recorded MuJoCo states, so rejected attempts cost no rendering.

- clean: the expert as is; it must succeed with its stages in order (no stage revisited). The episode
  ends HOLD_FRAMES after the first success.
- degraded: teleoperation-like flaws on top of the expert: action noise, pauses, slow stretches and,
  for grasping tasks, a forced drop mid-transport that the expert recovers from by re-grasping. It
  must still succeed; the annotation shows the regression (e.g. reach, grasp, lift, grasp, lift, place).
- failed: the operator gives up at some stage (after a forced drop, for grasping tasks, half the time)
  and pulls the hand back with the gripper open; the episode ends RETREAT frames later without success.
  The sparse annotation covers every frame in LeRobot's schema (the last stage reached runs to the end),
  and the episodes-table column `regress_from_frame` (sarm.model.labels.REGRESS_COLUMN; -1 for the other
  demos) marks the first frame of the retreat. SARM's labels play the episode backwards from there (the
  form rewind targets take), so the progress label falls back while the robot backs away instead of the
  last stage's τ rising on; LeRobot ignores the extra column.

Long-horizon tasks (sarm.sim.stages.REPEATED_TASKS, e.g. pick-place-x3-v3): the base task `times` over in
one episode. HOLD_FRAMES after each success but the last, the puck is re-placed at a fresh spot drawn from
the env's own layout sampler (the goal stays), and the expert starts over; stages are "reach 1" … "place 3".
After a re-placement the operator holds the hand still for REPLACE_FRAMES with the gripper opening (the
expert alone would descend on the new puck with its fingers still closed), and on long moves (see `_long_move`)
works at a teleoperator's pace, LONG_HORIZON_SPEED of the expert's; the expert's own pace is kept for the
descent and grasp, whose timing it relies on. So episodes run 20–30 s and most frames' windows use the fixed
1 s stride, which no single-task demo (< 8 s) reaches. `success` and `next.success` mean the whole task:
true only once the last repetition succeeds.

Rendering is offscreen on the CPU: MUJOCO_GL defaults to EGL (Mesa's software EGL works headless; no
display needed) and must be set before mujoco is first imported, which is why this module sets it
before its imports. Shadows, reflections and multisampling are off: ~10x faster, same content.
"""

from __future__ import annotations

import os

os.environ.setdefault("MUJOCO_GL", "egl")  # read once when mujoco is imported (directly or by metaworld)

import math
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, fields
from typing import Any, Literal

import mujoco
import numpy as np
from metaworld.env_dict import ALL_V3_ENVIRONMENTS, ALL_V3_ENVIRONMENTS_GOAL_OBSERVABLE
from metaworld.policies import ENV_POLICY_MAP
from metaworld.policies.policy import Policy
from metaworld.sawyer_xyz_env import SawyerXYZEnv

from sarm.data.episode import EpisodeData
from sarm.model.labels import REGRESS_COLUMN
from sarm.sim.stages import REPEATED_TASKS, TASK_INSTRUCTIONS, Scene, TaskStages, segment, task_stages

METAWORLD_FPS = 80  # one recorded frame per env step: dt = frame_skip 5 x 2.5 ms
CAMERA_NAME = "corner4"  # the corner view LeRobot's Meta-World env uses; mounted upside down
CAMERA_KEY = f"observation.images.{CAMERA_NAME}"
# The current-frame part of the 39-d observation and the goal (its last 3 values; the 18 between repeat
# the previous frame). The experts act on exactly these, so a state policy needs the goal too.
# Quaternions are MuJoCo's (w, x, y, z), and obj2 is zeros in one-object tasks.
STATE_NAMES = [
    *("hand_x", "hand_y", "hand_z", "gripper_open"),
    *("obj_x", "obj_y", "obj_z", "obj_qw", "obj_qx", "obj_qy", "obj_qz"),
    *("obj2_x", "obj2_y", "obj2_z", "obj2_qw", "obj2_qx", "obj2_qy", "obj2_qz"),
    *("goal_x", "goal_y", "goal_z"),
]
_CURRENT_FRAME = 18
MAX_STEPS = 499  # Meta-World refuses to step past 500, and reset_env takes one step
HOLD_FRAMES = 15  # frames kept after the first success, so demos show the result but no idle tail
RETREAT_FRAMES = (20, 60)  # failed demos: frames of pulling back after giving up
MAX_ATTEMPTS = 25
# Long-horizon tasks: on long moves the operator's hand moves at this fraction of the expert's speed (its
# 0.8 m/s cap becomes 5.6 cm/s, a careful teleoperator's pace); this is what makes episodes outlast the window.
LONG_HORIZON_SPEED = 0.07
REPLACE_FRAMES = 160  # 2 s of stillness, gripper opening, while the puck is put back
_NEAR_PUCK = 0.07  # the pick-place expert's grip-effort radius
_PUCK_ON_TABLE_Z = 0.04  # the pick-place expert's "puck still on the table" height
# Puck re-placements keep at least this xy distance from the goal, as Meta-World's own reset does.
_MIN_PUCK_GOAL_XY = 0.15

Quality = Literal["clean", "degraded", "failed"]
QUALITIES: tuple[Quality, ...] = ("clean", "degraded", "failed")
_RENDER_STATE = mujoco.mjtState.mjSTATE_QPOS | mujoco.mjtState.mjSTATE_MOCAP_POS | mujoco.mjtState.mjSTATE_MOCAP_QUAT


@dataclass(frozen=True)
class QualityMix:
    """Fractions of clean, degraded and failed demos; each in [0, 1], summing to 1."""

    clean: float
    degraded: float
    failed: float

    def __post_init__(self) -> None:
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        bad = {k: v for k, v in values.items() if not (math.isfinite(v) and 0.0 <= v <= 1.0)}
        if bad:
            raise ValueError(f"quality fractions must lie in [0, 1], got {bad}")
        if not math.isclose(sum(values.values()), 1.0, abs_tol=1e-6):
            raise ValueError(f"quality fractions must sum to 1, got {values} (sum {sum(values.values()):g})")

    def counts(self, episodes: int) -> dict[Quality, int]:
        """Episodes per quality, rounded by largest remainder so the counts add up to `episodes`."""
        exact = {q: getattr(self, q) * episodes for q in QUALITIES}
        counts = {q: math.floor(v) for q, v in exact.items()}
        by_remainder = sorted(QUALITIES, key=lambda q: counts[q] - exact[q])
        for q in by_remainder[: episodes - sum(counts.values())]:
            counts[q] += 1
        return counts


def parse_mix(text: str) -> QualityMix:
    """Parse 'clean=0.5,degraded=0.3,failed=0.2'; omitted qualities are 0 (so 'clean=1' works)."""
    values: dict[str, float] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, value = (s.strip() for s in item.partition("="))
        if not sep or key not in QUALITIES:
            raise ValueError(f"bad quality mix item {item!r}: expected name=fraction with name in {QUALITIES}")
        if key in values:
            raise ValueError(f"quality {key!r} is given twice in {text!r}")
        try:
            values[key] = float(value)
        except ValueError:
            raise ValueError(f"quality {key!r} has fraction {value!r}, which is not a number") from None
    if not values:
        raise ValueError(f"empty quality mix {text!r}: expected e.g. 'clean=0.5,degraded=0.3,failed=0.2'")
    return QualityMix(**{q: values.get(q, 0.0) for q in QUALITIES})


def stage_names(task: str) -> list[str]:
    """The sparse stage vocabulary of a task, in the order a successful demo goes through it."""
    _check_task(task)
    return task_stages(task).names


def _check_task(task: str) -> None:
    if task not in ALL_V3_ENVIRONMENTS and task not in REPEATED_TASKS:
        raise ValueError(
            f"unknown Meta-World task {task!r}; valid tasks: {sorted(ALL_V3_ENVIRONMENTS)}, "
            f"long-horizon: {sorted(REPEATED_TASKS)}"
        )
    if env_task(task) not in ENV_POLICY_MAP:
        raise ValueError(f"Meta-World task {task!r} has no scripted expert policy to generate demos with")


# --- perturbation plans --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Event:
    """A flaw that starts `delay` frames after the episode first reaches `stage`, for `frames` frames."""

    kind: Literal["pause", "slow", "drop", "give_up"]
    stage: int
    delay: int
    frames: int
    scale: float = 1.0  # slow: factor on the expert's motion

    def describe(self) -> str:
        """e.g. 'slowx0.38@stage2+10:26': kind (and scale), stage, delay, duration."""
        scale = f"x{self.scale:.2f}" if self.kind == "slow" else ""
        return f"{self.kind}{scale}@stage{self.stage}+{self.delay}:{self.frames}"


@dataclass(frozen=True)
class Plan:
    quality: Quality
    noise: float = 0.0  # std of Gaussian noise on the xyz action (actions lie in [-1, 1])
    events: tuple[Event, ...] = ()

    def describe(self) -> str:
        return ";".join([f"noise={self.noise:.2f}", *(e.describe() for e in self.events)])


def _plan(quality: Quality, stages: TaskStages, rng: np.random.Generator) -> Plan:
    if quality == "clean":
        return Plan("clean")
    last = len(stages.stages) - 1
    noise = float(rng.uniform(0.05, 0.25))
    if quality == "degraded":
        kinds = ["pause", "slow"] + (["drop"] if stages.carry_stage is not None else [])
        chosen = rng.choice(kinds, size=int(rng.integers(1, len(kinds) + 1)), replace=False)
        events = tuple(_event(str(kind), stages, rng) for kind in chosen)
        return Plan("degraded", noise, events)
    if stages.carry_stage is not None and rng.random() < 0.5:
        drop = _event("drop", stages, rng)
        give_up = Event("give_up", drop.stage, drop.delay + drop.frames, _retreat_frames(rng))
        return Plan("failed", noise, (drop, give_up))
    give_up = Event("give_up", int(rng.integers(0, last)), int(rng.integers(0, 15)), _retreat_frames(rng))
    return Plan("failed", noise, (give_up,))


def _retreat_frames(rng: np.random.Generator) -> int:
    return int(rng.integers(*RETREAT_FRAMES))


def _event(kind: str, stages: TaskStages, rng: np.random.Generator) -> Event:
    if kind == "drop":
        assert stages.carry_stage is not None
        return Event("drop", stages.carry_stage, int(rng.integers(2, 10)), int(rng.integers(8, 16)))
    stage = int(rng.integers(0, len(stages.stages) - 1))  # never the final stage: the task is done there
    delay = int(rng.integers(0, 15))
    if kind == "pause":
        return Event("pause", stage, delay, int(rng.integers(15, 60)))
    return Event("slow", stage, delay, int(rng.integers(20, 60)), float(rng.uniform(0.2, 0.5)))


# --- rollout -------------------------------------------------------------------------------------------


@dataclass
class Rollout:
    """One attempt, recorded per frame t (state s_t, action a_t, then reward and success of s_{t+1})."""

    obs: list[np.ndarray] = field(default_factory=list)
    action: list[np.ndarray] = field(default_factory=list)
    reward: list[float] = field(default_factory=list)
    success: list[bool] = field(default_factory=list)
    level: list[int] = field(default_factory=list)
    sim_state: list[np.ndarray] = field(default_factory=list)  # what rendering needs to redraw s_t
    give_up: int | None = None  # first frame of a failed demo's retreat

    @property
    def succeeded(self) -> bool:
        return any(self.success)


def env_task(task: str) -> str:
    """The Meta-World environment a task runs in (a long-horizon task: the one it repeats)."""
    return REPEATED_TASKS[task][0] if task in REPEATED_TASKS else task


def repetitions(task: str) -> int:
    return REPEATED_TASKS[task][1] if task in REPEATED_TASKS else 1


def step_budget(task: str) -> int:
    """Most frames one attempt may take: MAX_STEPS; a long-horizon task twice that per repetition (its operator
    is slower), plus its pauses."""
    times = repetitions(task)
    return MAX_STEPS if times == 1 else times * (2 * MAX_STEPS + REPLACE_FRAMES)


def make_env(task: str) -> SawyerXYZEnv:
    env = ALL_V3_ENVIRONMENTS_GOAL_OBSERVABLE[f"{env_task(task)}-goal-observable"]()
    env.max_path_length = step_budget(task) + 1  # reset_env takes one step
    # Sample a new object/goal layout at each reset from env.np_random (seeded per episode) instead of
    # keeping the layout fixed at construction; Meta-World's own task builder flips the same switch.
    env._freeze_rand_vec = False
    env.seeded_rand_vec = True
    if round(1.0 / env.dt) != METAWORLD_FPS:
        raise RuntimeError(f"{task}: env runs at {1.0 / env.dt:g} Hz, expected {METAWORLD_FPS}")
    return env


def policy_state(obs: np.ndarray) -> np.ndarray:
    """The STATE_NAMES values of one observation (39,) or of many (T, 39), as float32."""
    return np.concatenate([obs[..., :_CURRENT_FRAME], obs[..., -3:]], axis=-1).astype(np.float32)


def reset_env(env: SawyerXYZEnv, seed: int) -> np.ndarray:
    """New layout from `seed`; returns the first observation (env.reset itself clears MjData)."""
    env.seed(seed)
    env.reset()
    # Some envs move bodies at reset without recomputing positions, so the reset observation can show
    # the previous layout (drawer-open does); one still step, gripper open as after reset, refreshes it.
    obs, *_ = env.step(np.array([0.0, 0.0, 0.0, -1.0], dtype=np.float32))
    return obs


def replace_puck(env: SawyerXYZEnv) -> np.ndarray:
    """Put the puck back at rest on the table at a new spot from the env's layout sampler (seeded at reset), at
    least _MIN_PUCK_GOAL_XY from the goal, which stays; returns the observation of the new scene."""
    goal = np.asarray(env._target_pos)
    while True:
        puck = env._get_state_rand_vec()[:3]
        if np.linalg.norm(puck[:2] - goal[:2]) >= _MIN_PUCK_GOAL_XY:
            break
    env._set_obj_xyz(puck)  # zeroes the puck's velocity and runs mj_forward
    env.obj_init_pos = puck  # the env's reward and grasp flag measure lifting from here
    return np.asarray(env._get_obs())


def _long_move(obs: np.ndarray) -> bool:
    """Pick-place: the hand travels to the puck (not yet within the grip radius) or carries it off the table;
    not the descent and grasp in between, where the expert closes its fingers on a timer-like condition."""
    return bool(np.linalg.norm(obs[0:3] - obs[4:7]) >= _NEAR_PUCK or obs[6] >= _PUCK_ON_TABLE_Z)


class _Operator:
    """Applies a plan's flaws to the expert's actions, as they come due."""

    def __init__(self, plan: Plan, rng: np.random.Generator, speed: float = 1.0) -> None:
        self.plan = plan
        self.rng = rng
        self.speed = speed  # scales the expert's hand motion (the operator's pace)
        self.first_frame: dict[int, int] = {}  # stage -> first frame at which the episode reached it
        self.home: np.ndarray | None = None  # where a giving-up operator pulls the hand back to
        self.give_up_frame: int | None = None  # when the retreat began

    def started(self, event: Event, t: int) -> int | None:
        """Frames since `event` began, or None when it is not running at frame t."""
        begin = self.first_frame.get(event.stage)
        if begin is None or t < begin + event.delay:
            return None
        elapsed = t - begin - event.delay
        return elapsed if event.kind == "give_up" or elapsed < event.frames else None

    def act(self, expert: np.ndarray, obs: np.ndarray, level: int, t: int) -> np.ndarray:
        for stage in range(level + 1):
            self.first_frame.setdefault(stage, t)
        if self.home is None:
            self.home = obs[:3].copy()
        action = np.clip(expert, -1.0, 1.0)
        if self.speed != 1.0 and _long_move(obs):
            action[:3] *= self.speed
        for event in self.plan.events:
            if self.started(event, t) is None:
                continue
            if event.kind == "pause":
                action[:3] = 0.0  # keeps the grip: letting go is a different flaw
            elif event.kind == "slow":
                action[:3] *= event.scale
            elif event.kind == "drop":
                action[3] = -1.0
            else:  # give_up: back towards the start pose, gripper open
                if self.give_up_frame is None:
                    self.give_up_frame = t
                action[:3] = np.clip(10.0 * (self.home - obs[:3]), -1.0, 1.0)
                action[3] = -1.0
        if self.plan.noise:
            action[:3] += self.rng.normal(0.0, self.plan.noise, size=3)
        return np.clip(action, -1.0, 1.0).astype(np.float32)

    def finished(self, t: int) -> bool:
        """Whether a give-up has run its course by frame t (the failed demo ends there)."""
        for event in self.plan.events:
            elapsed = self.started(event, t) if event.kind == "give_up" else None
            if elapsed is not None and elapsed >= event.frames:
                return True
        return False


def _rollout(
    env: SawyerXYZEnv,
    policy: Policy,
    stages: TaskStages,
    plan: Plan,
    seed: int,
    rng: np.random.Generator,
    times: int = 1,
    speed: float = 1.0,
    budget: int = MAX_STEPS,
) -> Rollout:
    """One attempt; `times` > 1 repeats the task, re-placing the puck HOLD_FRAMES after each success but the
    last, and the recorded success flag is the whole task's (the last repetition's)."""
    obs = reset_env(env, seed)
    obj_start = obs[4:7].copy()
    operator = _Operator(plan, rng, speed)
    record = Rollout()
    state = np.empty(mujoco.mj_stateSize(env.model, _RENDER_STATE))
    first_success: int | None = None  # of the current repetition
    repetition = 0
    still_until = -1  # the hand waits, gripper opening, before this frame (after a re-placement)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the experts warn on every saturated action
        for t in range(budget):
            if first_success is not None and t > first_success + HOLD_FRAMES and repetition < times - 1:
                obs = replace_puck(env)
                obj_start, first_success, repetition = obs[4:7].copy(), None, repetition + 1
                still_until = t + REPLACE_FRAMES
            if operator.finished(t) or (first_success is not None and t > first_success + HOLD_FRAMES):
                break
            scene = Scene.from_obs(obs, obj_start, solved=first_success is not None, repetition=repetition)
            level = stages.level(scene, previous=record.level[-1] if record.level else 0)
            action = operator.act(policy.get_action(obs), obs, level, t)
            if t < still_until:
                action = np.array([0.0, 0.0, 0.0, -1.0], dtype=np.float32)
            mujoco.mj_getState(env.model, env.data, state, _RENDER_STATE)
            record.obs.append(obs)
            record.sim_state.append(state.copy())
            record.level.append(level)
            record.action.append(action)
            obs, reward, _, _, info = env.step(action)
            record.reward.append(float(reward))
            record.success.append(bool(info["success"]) and repetition == times - 1)
            if info["success"] and first_success is None:
                first_success = t
    record.give_up = operator.give_up_frame
    return record


def _acceptable(record: Rollout, quality: Quality, stages: TaskStages) -> bool:
    if quality == "failed":
        return not record.succeeded
    if not record.succeeded:
        return False
    if quality == "degraded":
        return True
    order = [stages.names.index(name) for name in segment(record.level, stages.names).names]
    return order == sorted(set(order)) and order[-1] == len(stages.stages) - 1


# --- rendering -----------------------------------------------------------------------------------------


def _renderer(env: SawyerXYZEnv, image_size: int) -> mujoco.Renderer:
    # Multisampling and shadow maps are allocated with the GL context: switch them off before it exists.
    env.model.vis.quality.offsamples = 0
    env.model.vis.quality.shadowsize = 0
    try:
        renderer = mujoco.Renderer(env.model, image_size, image_size)
    except mujoco.FatalError as err:
        raise RuntimeError(
            f"mujoco could not make an offscreen OpenGL context ({err}). Set MUJOCO_GL=egl (or osmesa) "
            "before anything imports mujoco (this module can only set it when it imports mujoco first) "
            "and install Mesa's EGL (Debian/Ubuntu: libegl1 libgl1-mesa-dri)"
        ) from err
    for flag in (mujoco.mjtRndFlag.mjRND_SHADOW, mujoco.mjtRndFlag.mjRND_REFLECTION):
        renderer.scene.flags[flag] = 0
    return renderer


def _render(env: SawyerXYZEnv, renderer: mujoco.Renderer, sim_states: list[np.ndarray]) -> np.ndarray:
    frames = np.empty((len(sim_states), renderer.height, renderer.width, 3), dtype=np.uint8)
    for t, state in enumerate(sim_states):
        mujoco.mj_setState(env.model, env.data, state, _RENDER_STATE)
        mujoco.mj_forward(env.model, env.data)
        renderer.update_scene(env.data, camera=CAMERA_NAME)
        # The corner cameras are mounted upside down: rotate by 180 degrees (a vertical flip alone
        # would mirror the scene left to right).
        frames[t] = renderer.render()[::-1, ::-1]
    return frames


# --- episodes ------------------------------------------------------------------------------------------


def _qualities(episodes: int, mix: QualityMix, seed: int) -> list[Quality]:
    counts = mix.counts(episodes)
    ordered = [q for q in QUALITIES for _ in range(counts[q])]
    return [ordered[i] for i in np.random.default_rng(seed).permutation(episodes)]


def _episode_seed(seed: int, index: int, attempt: int) -> int:
    return int(np.random.SeedSequence((seed, index, attempt)).generate_state(1)[0])


def _episode(task: str, record: Rollout, frames: np.ndarray, plan: Plan, stages: TaskStages) -> EpisodeData:
    episode_columns: dict[str, Any] = {
        "success": record.succeeded,
        "quality": plan.quality,
        "perturbations": plan.describe(),
        REGRESS_COLUMN: -1 if record.give_up is None or record.succeeded else record.give_up,
    }
    return EpisodeData(
        task=TASK_INSTRUCTIONS[task],
        frames={CAMERA_KEY: frames},
        state=policy_state(np.asarray(record.obs)),
        action=np.asarray(record.action, dtype=np.float32),
        annotations={"sparse": segment(record.level, stages.names)},
        episode_columns=episode_columns,
        frame_columns={
            "next.reward": np.asarray(record.reward, dtype=np.float32),
            "next.success": np.asarray(record.success, dtype=bool),
        },
    )


def generate_episodes(
    task: str,
    episodes: int,
    *,
    image_size: int = 128,
    seed: int = 0,
    mix: QualityMix = QualityMix(0.5, 0.3, 0.2),
) -> Iterator[EpisodeData]:
    """Yield `episodes` demos of `task` in a seed-determined order of qualities, `mix` of each.

    Episode i is a function of (seed, i, its quality) only. Raises ValueError at once on bad arguments;
    the iterator raises RuntimeError if no acceptable demo turns up in MAX_ATTEMPTS layouts.
    """
    _check_task(task)
    if episodes < 0:
        raise ValueError(f"episodes must be >= 0, got {episodes}")
    if not 8 <= image_size <= 480:  # 480: Meta-World's offscreen framebuffer height
        raise ValueError(f"image_size must be in [8, 480], got {image_size}")
    return _generate(task, _qualities(episodes, mix, seed), image_size, seed)


def _generate(task: str, qualities: list[Quality], image_size: int, seed: int) -> Iterator[EpisodeData]:
    env = make_env(task)
    expert: Callable[[], Policy] = ENV_POLICY_MAP[env_task(task)]
    policy = expert()
    stages = task_stages(task)
    try:
        with _renderer(env, image_size) as renderer:
            for index, quality in enumerate(qualities):
                plan, record = _attempt_until_acceptable(env, policy, stages, quality, seed, index, task)
                yield _episode(task, record, _render(env, renderer, record.sim_state), plan, stages)
    finally:
        env.close()


def _attempt_until_acceptable(
    env: SawyerXYZEnv, policy: Policy, stages: TaskStages, quality: Quality, seed: int, index: int, task: str
) -> tuple[Plan, Rollout]:
    times = repetitions(task)
    speed = LONG_HORIZON_SPEED if times > 1 else 1.0
    for attempt in range(MAX_ATTEMPTS):
        episode_seed = _episode_seed(seed, index, attempt)
        rng = np.random.default_rng(episode_seed)  # draws the plan, then the action noise
        plan = _plan(quality, stages, rng)
        record = _rollout(env, policy, stages, plan, episode_seed, rng, times, speed, step_budget(task))
        if _acceptable(record, quality, stages):
            return plan, record
    raise RuntimeError(f"no acceptable {quality} demo in {MAX_ATTEMPTS} layouts (episode {index}, seed {seed})")
