"""Policy evaluation: score many rollout videos concurrently and say, per episode, how far it got and whether it
succeeded (what `sarm-client evaluate` prints and writes).

    evaluation = evaluate_videos("localhost:50051", paths, "Pick up the puck and place it at the goal.")
    for episode in evaluation.episodes:
        print(episode.video, episode.final_progress, episode.furthest_stage, episode.success)
    evaluation.write(Path("eval"))  # summary.json, summary.csv, curves.png (the PNG needs sarm-client[plot])

Predicted success is `final_progress >= threshold`, where the final progress is the median task progress of the
video's last FINAL_FRAMES frames (so a misread frame or two at the very end cannot flip the verdict). At most
`concurrency` videos are scored at once (each on its own episode stream); a video the server refuses for now
(Overloaded, e.g. too many open streams, or Unavailable) is scored again from its start after the wait `retry`
gives, never shorter than the server's retry-after hint, within `video_timeout`. A video that cannot be scored
(unreadable, refused for good, out of retries) is reported with its error; the others still are.
"""

from __future__ import annotations

import csv
import json
import math
import statistics
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sarm_client import video
from sarm_client.client import SarmClient
from sarm_client.config import TLS, Deadline, Retry, Timeout
from sarm_client.errors import SarmError
from sarm_client.models import FrameScore, ModelInfo
from sarm_client.rewards import one_line

DEFAULT_THRESHOLD = 0.5  # final progress at or above it: predicted success (chosen in bench/evaluate_quality.py)
DEFAULT_CONCURRENCY = 4
# Scoring a whole video again is always safe (nothing is kept between tries), so a busy server is waited for longer
# than a single call would be.
EVALUATION_RETRY = Retry(attempts=6, backoff=0.5, max_backoff=8.0)
FINAL_FRAMES = 5  # the final progress is the median over these last frames
MIN_STAGE_FRAMES = 3  # a stage counts as reached once predicted for this many frames in a row (one-frame blips don't)
SUMMARY_JSON, SUMMARY_CSV, CURVES_PNG = "summary.json", "summary.csv", "curves.png"
CSV_COLUMNS = ("video", "frames", "fps", "final_progress", "max_progress", "furthest_stage", "success", "error")
Progress = Callable[[int, int], None]  # (videos done, videos in all)


@dataclass(frozen=True)
class EpisodeResult:
    """One rollout video's evaluation; `error` (and NaN progress, success False) when it could not be scored."""

    video: str
    frames: int = 0
    fps: float = math.nan
    final_progress: float = math.nan
    max_progress: float = math.nan
    furthest_stage: str = ""
    success: bool = False
    curve: tuple[float, ...] = field(default=(), repr=False)  # progress of every frame
    stages: tuple[str, ...] = field(default=(), repr=False)  # predicted stage of every frame
    error: str | None = None

    def row(self) -> dict[str, Any]:
        """The summary fields (no curves), JSON-ready: NaN becomes None."""
        return {name: _plain(getattr(self, name)) for name in CSV_COLUMNS}


@dataclass(frozen=True)
class Evaluation:
    instruction: str
    threshold: float
    model_version: str
    task_stages: tuple[str, ...]  # the instruction's stages in task order (the model's, when it is not a known task)
    episodes: tuple[EpisodeResult, ...]

    @property
    def scored(self) -> list[EpisodeResult]:
        return [e for e in self.episodes if e.error is None]

    def summary(self) -> dict[str, Any]:
        scored = self.scored
        succeeded = sum(e.success for e in scored)
        return {
            "episodes": len(self.episodes),
            "scored": len(scored),
            "errors": len(self.episodes) - len(scored),
            "succeeded": succeeded,
            "success_rate": succeeded / len(scored) if scored else None,
            "mean_final_progress": sum(e.final_progress for e in scored) / len(scored) if scored else None,
        }

    def to_json(self, curves: bool = False) -> dict[str, Any]:
        """One JSON object: the run's settings, an `episodes` list (video, final_progress, success, ...) and the
        summary; with `curves`, each episode's per-frame progress and stages too."""
        episodes = [
            e.row() | ({"progress": list(e.curve), "stages": list(e.stages)} if curves else {}) for e in self.episodes
        ]
        return {
            "instruction": self.instruction,
            "threshold": self.threshold,
            "model_version": self.model_version,
            "task_stages": list(self.task_stages),
            "episodes": episodes,
            "summary": self.summary(),
        }

    def write(self, out: Path, *, plot: bool = True) -> list[Path]:
        """summary.json (with curves), summary.csv and, with `plot`, curves.png into `out`; returns the files
        written. The PNG needs matplotlib (`sarm-client[plot]`): without it, ImportError after the summaries."""
        out.mkdir(parents=True, exist_ok=True)
        (out / SUMMARY_JSON).write_text(json.dumps(self.to_json(curves=True), indent=1) + "\n")
        with (out / SUMMARY_CSV).open("w", newline="") as file:
            writer = csv.DictWriter(file, fieldnames=CSV_COLUMNS)
            writer.writeheader()
            writer.writerows(e.row() for e in self.episodes)
        written = [out / SUMMARY_JSON, out / SUMMARY_CSV]
        if not plot:
            return written
        from sarm_client.plot import plot_curves

        plot_curves(self, out / CURVES_PNG)
        return [*written, out / CURVES_PNG]


def _plain(value: Any) -> Any:
    return None if isinstance(value, float) and math.isnan(value) else value


def task_stages(info: ModelInfo, instruction: str) -> tuple[str, ...]:
    """The instruction's stages in task order; the model's stage list when the instruction is not one it knows."""
    for task in info.tasks:
        if task.instruction.strip().lower() == instruction.strip().lower():
            return task.stage_names
    return info.stage_names


def furthest_stage(stages: Sequence[str], order: Sequence[str]) -> str:
    """The latest stage in `order` predicted for MIN_STAGE_FRAMES frames in a row (for a shorter video: at all)."""
    need = min(MIN_STAGE_FRAMES, len(stages))
    reached: set[str] = set()
    run = 0
    for i, stage in enumerate(stages):
        run = run + 1 if i and stage == stages[i - 1] else 1
        if run >= need:
            reached.add(stage)
    ranked = [s for s in reached if s in order]
    return max(ranked, key=order.index) if ranked else (stages[-1] if stages else "")


def final_progress(curve: Sequence[float]) -> float:
    """The median progress of the last FINAL_FRAMES frames (of all, in a shorter video)."""
    return float(statistics.median(curve[-FINAL_FRAMES:]))


def episode_result(
    path: str, scores: list[FrameScore], fps: float, order: Sequence[str], threshold: float
) -> EpisodeResult:
    curve = tuple(s.score.progress for s in scores)
    stages = tuple(s.score.stage_name for s in scores)
    if not curve:
        return EpisodeResult(path, error="the server scored no frame of the video")
    return EpisodeResult(
        video=path,
        frames=len(curve),
        fps=fps,
        final_progress=final_progress(curve),
        max_progress=max(curve),
        furthest_stage=furthest_stage(stages, order),
        success=final_progress(curve) >= threshold,
        curve=curve,
        stages=stages,
    )


def evaluate_with(
    client: SarmClient,
    videos: Sequence[str | Path],
    instruction: str,
    *,
    threshold: float = DEFAULT_THRESHOLD,
    fps: float | None = None,
    concurrency: int = DEFAULT_CONCURRENCY,
    retry: Retry = EVALUATION_RETRY,
    video_timeout: float | None = None,
    on_progress: Progress | None = None,
) -> Evaluation:
    """`evaluate_videos` on a client you made (its channel, token, TLS and deadlines)."""
    if not videos:
        raise ValueError("no videos to evaluate")
    if concurrency < 1:
        raise ValueError(f"concurrency must be at least 1, not {concurrency}")
    if not 0 < threshold <= 1:
        raise ValueError(f"threshold must be in (0, 1], not {threshold}")
    info = client.info()  # once; a gateway that is down fails here, before any video is decoded
    order = task_stages(info, instruction)
    # Threads on the blocking client, not asyncio: grpc.aio can report a stream the server refused as it opened
    # as INTERNAL instead of RESOURCE_EXHAUSTED, and that refusal is what the retries here are for.
    pool = ThreadPoolExecutor(concurrency, thread_name_prefix="sarm-evaluate")
    try:
        futures = [
            pool.submit(_score, client, str(path), instruction, fps, order, threshold, retry, video_timeout)
            for path in videos
        ]
        for done, _ in enumerate(as_completed(futures), 1):
            if on_progress is not None:
                on_progress(done, len(videos))
        episodes = tuple(future.result() for future in futures)
    finally:
        pool.shutdown(wait=False, cancel_futures=True)  # Ctrl-C: queued videos are not started
    return Evaluation(instruction, threshold, info.model_version, order, episodes)


def _score(
    client: SarmClient,
    path: str,
    instruction: str,
    fps: float | None,
    order: Sequence[str],
    threshold: float,
    retry: Retry,
    video_timeout: float | None,
) -> EpisodeResult:
    deadline = Deadline(video_timeout)
    failures = 0
    while True:
        try:
            rate = video.frame_rate(path) if fps is None else fps
            scores = client.score_video(path, instruction, fps=rate, timeout=deadline.remaining())
            return episode_result(path, scores, rate, order, threshold)
        except SarmError as error:
            wait = retry.delay(failures, error, deadline.remaining())
            if wait is None:
                return EpisodeResult(path, error=one_line(error))
        except OSError as error:  # missing or unreadable file
            return EpisodeResult(path, error=one_line(error))
        failures += 1
        time.sleep(wait)


def evaluate_videos(
    target: str,
    videos: Sequence[str | Path],
    instruction: str,
    *,
    threshold: float = DEFAULT_THRESHOLD,
    fps: float | None = None,
    concurrency: int = DEFAULT_CONCURRENCY,
    token: str | None = None,
    tls: TLS | bool = False,
    timeout: Timeout = Timeout(),
    retry: Retry = EVALUATION_RETRY,
    video_timeout: float | None = None,
    on_progress: Progress | None = None,
) -> Evaluation:
    """Score `videos` (rollouts of one task, one camera each, decoded at the model's image size: needs
    `sarm-client[video]`) on the gateway at `target`, `concurrency` at a time; see the module's docstring.
    `fps` defaults to each file's frame rate; `video_timeout` bounds one video's scoring with its retries."""
    with SarmClient(target, token=token, tls=tls, timeout=timeout) as client:
        return evaluate_with(
            client,
            videos,
            instruction,
            threshold=threshold,
            fps=fps,
            concurrency=concurrency,
            retry=retry,
            video_timeout=video_timeout,
            on_progress=on_progress,
        )
