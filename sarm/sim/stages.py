"""Stage tables for Meta-World demos: instructions, stage names and when each stage begins.

Meta-World's scripted experts are stateless: each step they pick a target from the observation (the
branch of `_desired_pos`) and a grip effort. A stage predicate restates such a branch condition, or an
object-state fact (hand at the object, object held, object lifted, task solved), so stage labels come
from the state the expert reacts to, not from frame counts. `TaskStages.level` is the latest stage whose
predicate holds; `segment` turns per-frame levels into [start, end) subtasks.

Long-horizon tasks (REPEATED_TASKS) do a base task several times in one episode, the object re-placed in
between; their table is the base table once per repetition, names suffixed "reach 1" … "place 3" (`repeated`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from sarm.data.annotations import EpisodeAnnotation, Subtask

# Fingers-apart reading (1 = open) below which the experts treat the gripper as closed on the object.
GRIPPER_CLOSED = 0.73
# A level change shorter than this (50 ms at 80 Hz) is sensor chatter around a threshold, not a stage.
MIN_STAGE_FRAMES = 4

TASK_INSTRUCTIONS: dict[str, str] = {
    "assembly-v3": "Pick up the nut and put it onto the peg.",
    "basketball-v3": "Dunk the basketball into the basket.",
    "bin-picking-v3": "Pick the puck from one bin and place it into the other bin.",
    "box-close-v3": "Pick up the lid and close the box with it.",
    "button-press-topdown-v3": "Press the button from the top.",
    "button-press-topdown-wall-v3": "Reach past the wall and press the button from the top.",
    "button-press-v3": "Press the button.",
    "button-press-wall-v3": "Reach past the wall and press the button.",
    "coffee-button-v3": "Push the button on the coffee machine.",
    "coffee-pull-v3": "Pull the mug out from under the coffee machine.",
    "coffee-push-v3": "Push the mug under the coffee machine.",
    "dial-turn-v3": "Rotate the dial 180 degrees.",
    "disassemble-v3": "Pick the nut off the peg.",
    "door-close-v3": "Close the door.",
    "door-lock-v3": "Lock the door by turning the lock clockwise.",
    "door-open-v3": "Open the door.",
    "door-unlock-v3": "Unlock the door by turning the lock counter-clockwise.",
    "drawer-close-v3": "Push the drawer closed.",
    "drawer-open-v3": "Pull the drawer open.",
    "faucet-close-v3": "Turn the faucet clockwise to close it.",
    "faucet-open-v3": "Turn the faucet counter-clockwise to open it.",
    "hammer-v3": "Hammer the nail into the wall.",
    "hand-insert-v3": "Insert the gripper into the hole.",
    "handle-press-side-v3": "Press the handle down from the side.",
    "handle-press-v3": "Press the handle down.",
    "handle-pull-side-v3": "Pull the handle up from the side.",
    "handle-pull-v3": "Pull the handle up.",
    "lever-pull-v3": "Pull the lever up.",
    "peg-insert-side-v3": "Pick up the peg and insert it sideways into the hole.",
    "peg-unplug-side-v3": "Unplug the peg sideways.",
    "pick-out-of-hole-v3": "Pick the puck up out of the hole.",
    "pick-place-v3": "Pick up the puck and place it at the goal.",
    "pick-place-wall-v3": "Pick up the puck, carry it over the wall and place it at the goal.",
    "plate-slide-back-side-v3": "Slide the plate out of the cabinet sideways.",
    "plate-slide-back-v3": "Slide the plate out of the cabinet.",
    "plate-slide-side-v3": "Slide the plate into the cabinet sideways.",
    "plate-slide-v3": "Slide the plate into the cabinet.",
    "push-back-v3": "Pull the puck back to the goal.",
    "push-v3": "Push the puck to the goal.",
    "push-wall-v3": "Push the puck around the wall to the goal.",
    "reach-v3": "Reach the goal position.",
    "reach-wall-v3": "Reach over the wall to the goal position.",
    "shelf-place-v3": "Pick up the block and place it on the shelf.",
    "soccer-v3": "Kick the ball into the goal.",
    "stick-pull-v3": "Grasp the stick and pull the box with it.",
    "stick-push-v3": "Grasp the stick and push the box with it.",
    "sweep-into-v3": "Sweep the puck into the hole.",
    "sweep-v3": "Sweep the puck off the table.",
    "window-close-v3": "Push the window closed.",
    "window-open-v3": "Push the window open.",
    "pick-place-x3-v3": "Pick up the puck and place it at the goal three times, the puck put back after each.",
}

# Long-horizon task -> (Meta-World task it repeats, repetitions). Not Meta-World environments of their own:
# the demo generator re-places the object after each success (sarm.sim.metaworld_demos).
REPEATED_TASKS: dict[str, tuple[str, int]] = {"pick-place-x3-v3": ("pick-place-v3", 3)}


@dataclass(frozen=True)
class Scene:
    """The facts stage predicates read from one frame (Meta-World's observation layout)."""

    hand: np.ndarray  # tool-centre point xyz (obs[0:3])
    gripper: float  # fingers apart, 1 = open (obs[3])
    obj: np.ndarray  # main object xyz (obs[4:7])
    obj_start: np.ndarray  # main object xyz at reset
    goal: np.ndarray  # goal xyz (obs[-3:])
    # Whether the env has reported success by this frame. Sticky: Meta-World's flag can drop again when
    # the object overshoots the goal (handle-press), and demos end HOLD_FRAMES after the first success.
    solved: bool
    # Repetitions of the base task completed before this one (long-horizon tasks; 0 otherwise). `solved` and
    # `obj_start` refer to the current repetition.
    repetition: int = 0

    @classmethod
    def from_obs(cls, obs: np.ndarray, obj_start: np.ndarray, solved: bool, repetition: int = 0) -> Scene:
        return cls(obs[0:3], float(obs[3]), obs[4:7], obj_start, obs[-3:], solved, repetition)


Predicate = Callable[[Scene], bool]


@dataclass(frozen=True)
class Stage:
    name: str
    begun: Predicate  # true once the task has reached this stage (later stages' predicates take precedence)


@dataclass(frozen=True)
class TaskStages:
    stages: tuple[Stage, ...]
    # The stage in which the object travels in the gripper (where a forced drop makes sense); None when
    # the task has no grasp.
    carry_stage: int | None = None
    # Levels never go back: for tables whose predicates cannot tell a regression from the hand passing by.
    monotone: bool = False

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.stages]

    def level(self, scene: Scene, previous: int = 0) -> int:
        """The latest stage whose predicate holds (stage 0 always does); never below `previous` if monotone."""
        latest = max(k for k, s in enumerate(self.stages) if k == 0 or s.begun(scene))
        return max(latest, previous) if self.monotone else latest


def _dist(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b))


def _held(s: Scene, radius: float) -> bool:
    return _dist(s.hand, s.obj) < radius and s.gripper < GRIPPER_CLOSED


def _lifted(s: Scene) -> bool:
    return bool(s.obj[2] > s.obj_start[2] + 0.01)


def _always(s: Scene) -> bool:
    return True


def _solved(s: Scene) -> bool:
    return s.solved


# Grasp predicates also ask for the object to rest on the table: an object falling out of an opened
# gripper passes close to the hand, and that is not a grasp.


# pick-place: the expert hovers over the puck, descends (grip effort on within 7 cm), waits for the
# fingers to close, then heads for the goal. The goal may be at table height, so "lift" is the
# closed-gripper transport branch rather than a height test.
def _puck_grasp(s: Scene) -> bool:
    return _dist(s.hand, s.obj) < 0.07 and not _lifted(s)


def _puck_held(s: Scene) -> bool:
    return _held(s, 0.07)


_PICK_PLACE = TaskStages(
    (Stage("reach", _always), Stage("grasp", _puck_grasp), Stage("lift", _puck_held), Stage("place", _solved)),
    carry_stage=2,
)

# assembly: grip effort comes on once the hand is over the nut's handle (2 cm to its -x side) and within
# 12 cm of it; the nut is lifted to the plane 14 cm above the peg, carried over the peg, then lowered on.
_NUT_HANDLE = np.array([-0.02, 0.0, 0.0])
_ABOVE_PEG = np.array([0.12, 0.0, 0.0])


def _nut_grasp(s: Scene) -> bool:
    over_handle = _dist(s.hand[:2], (s.obj + _NUT_HANDLE)[:2]) < 0.03
    return over_handle and abs(s.hand[2] - s.obj[2]) < 0.12 and not _lifted(s)


def _nut_lifted(s: Scene) -> bool:
    return _held(s, 0.08) and _lifted(s)


def _nut_carried(s: Scene) -> bool:
    return _nut_lifted(s) and s.hand[2] > s.goal[2] + 0.10


def _nut_over_peg(s: Scene) -> bool:
    # Once on the peg the nut slides down to table height, so this stage does not ask for it lifted.
    return s.solved or (_held(s, 0.08) and _dist(s.hand[:2], (s.goal + _ABOVE_PEG)[:2]) < 0.03)


_ASSEMBLY = TaskStages(
    (
        Stage("reach", _always),
        Stage("grasp", _nut_grasp),
        Stage("lift", _nut_lifted),
        Stage("move", _nut_carried),
        Stage("insert", _nut_over_peg),
    ),
    carry_stage=3,
)


# peg-insert-side: the expert closes the gripper while descending onto the peg (within 4 cm in xy and
# 15 cm in z), lifts it into line with the hole, then pushes it in along -x.
def _peg_grasp(s: Scene) -> bool:
    return _dist(s.hand[:2], s.obj[:2]) < 0.04 and abs(s.hand[2] - s.obj[2]) < 0.15 and not _lifted(s)


def _peg_lifted(s: Scene) -> bool:
    return _held(s, 0.06) and _lifted(s)


def _peg_in_line(s: Scene) -> bool:
    return _peg_lifted(s) and _dist(s.obj[1:], s.goal[1:]) < 0.03


_PEG_INSERT_SIDE = TaskStages(
    (Stage("reach", _always), Stage("grasp", _peg_grasp), Stage("lift", _peg_lifted), Stage("insert", _peg_in_line)),
    carry_stage=2,
)


# Any other task: the hand approaches, then touches or moves the main object, then the task is solved.
# The hand may pass near the object on its way (window-open), so these levels only go forward.
def _touched(s: Scene) -> bool:
    return _dist(s.hand, s.obj) < 0.05 or _dist(s.obj, s.obj_start) > 0.01


_GENERIC = TaskStages(
    (Stage("approach", _always), Stage("manipulate", _touched), Stage("finish", _solved)), monotone=True
)

_TASK_STAGES: dict[str, TaskStages] = {
    "pick-place-v3": _PICK_PLACE,
    "assembly-v3": _ASSEMBLY,
    "peg-insert-side-v3": _PEG_INSERT_SIDE,
}


def _in_repetition(stage: Stage, repetition: int) -> Predicate:
    # Begun once an earlier repetition is over, or in this one when the base stage has begun.
    return lambda s: s.repetition > repetition or (s.repetition == repetition and stage.begun(s))


def repeated(base: TaskStages, times: int) -> TaskStages:
    """`base` done `times` over: its stages once per repetition, named "<stage> <k>" (k from 1), so that the
    level is repetition · len(base) + the base level. The carry stage is the middle repetition's, so a forced
    drop lands mid-episode; a regression goes back within its repetition only."""
    if times < 1:
        raise ValueError(f"times must be >= 1, got {times}")
    stages = tuple(
        Stage(f"{stage.name} {r + 1}", _always if r == 0 and k == 0 else _in_repetition(stage, r))
        for r in range(times)
        for k, stage in enumerate(base.stages)
    )
    carry = None if base.carry_stage is None else base.carry_stage + len(base.stages) * (times // 2)
    return TaskStages(stages, carry_stage=carry, monotone=base.monotone)


_TASK_STAGES |= {task: repeated(_TASK_STAGES[base], times) for task, (base, times) in REPEATED_TASKS.items()}


def task_stages(task: str) -> TaskStages:
    return _TASK_STAGES.get(task, _GENERIC)


def segment(levels: Sequence[int], names: Sequence[str], min_frames: int = MIN_STAGE_FRAMES) -> EpisodeAnnotation:
    """Per-frame stage levels → subtasks tiling [0, len(levels)), in time order.

    A run shorter than `min_frames` is absorbed into the run before it, so a threshold crossed back and
    forth does not become a stage; a level that really goes down (a dropped object) starts a new
    subtask, so a stage name can occur twice.
    """
    runs: list[list[int]] = []  # [level, start, end]
    for t, level in enumerate(levels):
        if runs and runs[-1][0] == level:
            runs[-1][2] = t + 1
        else:
            runs.append([level, t, t + 1])
    merged: list[list[int]] = []
    for level, start, end in runs:
        if merged and (end - start < min_frames or merged[-1][0] == level):
            merged[-1][2] = end
        else:
            merged.append([level, start, end])
    if len(merged) > 1 and merged[0][2] - merged[0][1] < min_frames:  # a blip at the start joins the next run
        merged[1][1] = 0
        del merged[0]
    return EpisodeAnnotation(tuple(Subtask(names[level], start, end) for level, start, end in merged))
