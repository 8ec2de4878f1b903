"""A video's curve in the format asked for: JSON, a PNG plot for people, or `sarm_progress.parquet` for trainers.
All three build in a worker thread (the plot takes ~100 ms): `render` blocks."""

from __future__ import annotations

import io

import numpy as np
import pyarrow.parquet as pq
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from sarm.rabc.files import PROGRESS_FILE, progress_table
from sarm.rabc.progress import DatasetProgress, EpisodeProgress
from sarm.scoring.curve import progress_of_every_frame
from sarm.scoring.engine import Engine
from sarm_gateway.http.schemas import DenseScore, FrameScore, OutputFormat, VideoScores
from sarm_gateway.http.scoring import VideoCurve


def scores(curve: VideoCurve, model_version: str) -> VideoScores:
    return VideoScores(
        model_version=model_version,
        instruction=curve.instruction,
        matched_task=curve.matched.task,
        task_similarity=curve.matched.similarity,
        fps=curve.fps,
        stride_frames=curve.stride,
        num_frames=curve.num_frames,
        frames=[
            FrameScore(
                frame_index=r.frame_index,
                timestamp=r.frame_index / curve.fps,
                stage_index=r.score.stage_index,
                stage_name=r.score.stage_name,
                tau=r.score.tau,
                progress=r.score.progress,
                confidence=r.score.confidence,
                smoothed_progress=r.smoothed_progress,
                dense=None
                if r.score.dense is None
                else DenseScore(
                    stage_index=r.score.dense.stage_index,
                    stage_name=r.score.dense.stage_name,
                    tau=r.score.dense.tau,
                    progress=r.score.dense.progress,
                ),
            )
            for r in curve.results
        ],
    )


def plot(curve: VideoCurve, stage_names: list[str], model_version: str) -> bytes:
    """Progress over time above the predicted stage (with its confidence), one PNG. Figure, not pyplot: pyplot's
    global state is not safe across threads."""
    seconds = np.array([r.frame_index for r in curve.results]) / curve.fps
    figure = Figure(figsize=(9, 5.5), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    progress_axes, stage_axes = figure.subplots(2, 1, sharex=True, height_ratios=(2, 1))
    progress_axes.plot(seconds, [r.score.progress for r in curve.results], lw=1.5, label="progress")
    if any(r.smoothed_progress is not None for r in curve.results):
        progress_axes.plot(seconds, [r.smoothed_progress for r in curve.results], lw=1.5, label="smoothed")
    progress_axes.set(
        ylabel="task progress",
        ylim=(-0.02, 1.02),
        title=f"“{curve.instruction}” — model {model_version}, {curve.num_frames} frames at {curve.fps:g} fps",
    )
    progress_axes.grid(alpha=0.3)
    progress_axes.legend(loc="upper left")
    stage_axes.step(seconds, [r.score.stage_index for r in curve.results], where="post", color="black", lw=1)
    points = stage_axes.scatter(
        seconds,
        [r.score.stage_index for r in curve.results],
        c=[r.score.confidence for r in curve.results],
        cmap="viridis",
        vmin=0,
        vmax=1,
        s=12,
    )
    figure.colorbar(points, ax=stage_axes, label="confidence")
    stage_axes.set_yticks(range(len(stage_names)), stage_names)
    stage_axes.set(xlabel="time (s)", ylabel="stage", ylim=(-0.5, len(stage_names) - 0.5))
    stage_axes.grid(alpha=0.3)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def progress_parquet(curve: VideoCurve, model_version: str, window_frames: int) -> bytes:
    """The video as episode 0 with a value for every frame (the schema has no gaps): the scored frames' progress (the
    smoothed value unless smoothing is off), interpolated between them as `sarm rabc --stride` does. Provenance as
    `sarm rabc` writes it, in the schema metadata."""
    progress = progress_of_every_frame(curve.results, curve.num_frames)
    dense = progress_of_every_frame(curve.results, curve.num_frames, "dense") if curve.dense else None
    episode = EpisodeProgress(0, np.arange(len(progress), dtype=np.int64), progress, dense)
    every = curve.options.score_every
    provenance = {
        "source": "POST /v1/videos:score",
        "model_version": model_version,
        "instruction": curve.instruction,
        "fps": curve.fps,
        "smoothing": curve.options.smoothing_settings(),
        "task": {"matched": curve.matched.task, "similarity": curve.matched.similarity},
        "window": {"mode": curve.window_mode, "frames": window_frames, "stride_frames": curve.stride},
        "score_stride": every,
        "interpolation": "linear" if every > 1 else "none",
    }
    buffer = io.BytesIO()
    pq.write_table(progress_table(DatasetProgress([episode], provenance)), buffer)
    return buffer.getvalue()


def render(curve: VideoCurve, output: OutputFormat, engine: Engine) -> tuple[bytes, dict[str, str]]:
    """The body and its extra headers."""
    if output == "png":
        return plot(curve, engine.stage_names, engine.version), {}
    if output == "parquet":
        return (
            progress_parquet(curve, engine.version, engine.window_frames),
            {"Content-Disposition": f'attachment; filename="{PROGRESS_FILE}"'},
        )
    return scores(curve, engine.version).model_dump_json().encode(), {}
