"""SARM subtask annotations: types, consistency checks and dataset-level stage proportions.

Frames follow LeRobot's annotation tool: subtask k covers frames [start, end) of its episode, the next
subtask may start where the previous one ends, and the last `end` may equal the episode length.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

SCHEMES = ("sparse", "dense")


class AnnotationError(ValueError):
    """An annotation that cannot be trained on; the message names the episode and the fix."""


@dataclass(frozen=True)
class Subtask:
    name: str
    start: int  # first frame of the subtask
    end: int  # one past its last frame (LeRobot writes end == next start)

    @property
    def length(self) -> int:
        return self.end - self.start


@dataclass(frozen=True)
class EpisodeAnnotation:
    """The subtasks of one episode under one scheme (sparse or dense), in time order."""

    subtasks: tuple[Subtask, ...]

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.subtasks]


def annotation_problems(
    ann: EpisodeAnnotation, episode_length: int, vocabulary: Sequence[str] | None = None
) -> list[str]:
    """Every reason this episode's annotation is unusable (empty list when it is fine)."""
    problems: list[str] = []
    if not ann.subtasks:
        return ["has no subtasks: annotate at least one subtask or drop the episode"]
    previous: Subtask | None = None
    for k, sub in enumerate(ann.subtasks):
        where = f"subtask {k} ({sub.name!r})"
        if sub.start < 0 or sub.end > episode_length:
            problems.append(
                f"{where} spans frames [{sub.start}, {sub.end}) outside the episode's {episode_length} "
                "frames: clip it to [0, length]"
            )
        if sub.end < sub.start:
            problems.append(f"{where} ends (frame {sub.end}) before it starts (frame {sub.start}): swap them")
        if previous is not None and sub.start < previous.end:
            problems.append(
                f"{where} starts at frame {sub.start}, before subtask {k - 1} ({previous.name!r}) ends at "
                f"frame {previous.end}: subtasks must be in time order and must not overlap"
            )
        if vocabulary is not None and sub.name not in vocabulary:
            problems.append(
                f"{where} is not in the dataset's stage vocabulary {list(vocabulary)}: rename it or add it "
                "to meta/temporal_proportions_*.json"
            )
        previous = sub
    return problems


def stage_vocabulary(annotations: Iterable[EpisodeAnnotation]) -> list[str]:
    """Stage names in the order they first appear across episodes (a stable stage → class mapping)."""
    seen: dict[str, None] = {}
    for ann in annotations:
        for sub in ann.subtasks:
            seen.setdefault(sub.name, None)
    return list(seen)


def stage_proportions(episodes: Iterable[tuple[EpisodeAnnotation, int]], vocabulary: Sequence[str]) -> dict[str, float]:
    """Formula 1: ᾱ_k = mean over demos containing k of L_{i,k} / T_i, renormalised to sum to 1."""
    sums = dict.fromkeys(vocabulary, 0.0)
    counts = dict.fromkeys(vocabulary, 0)
    for ann, length in episodes:
        if length <= 0:
            raise AnnotationError("an episode of length 0 has no proportions: drop it from the dataset")
        per_stage: dict[str, int] = {}
        for sub in ann.subtasks:
            per_stage[sub.name] = per_stage.get(sub.name, 0) + sub.length
        for name, frames in per_stage.items():
            if name not in sums:
                raise AnnotationError(f"stage {name!r} is not in the vocabulary {list(vocabulary)}")
            sums[name] += frames / length
            counts[name] += 1
    means = {name: (sums[name] / counts[name] if counts[name] else 0.0) for name in vocabulary}
    total = sum(means.values())
    if total <= 0:
        raise AnnotationError("no annotated subtask has a positive duration: cannot compute stage proportions")
    return {name: value / total for name, value in means.items()}
