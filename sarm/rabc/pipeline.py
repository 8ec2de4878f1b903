"""RA-BC end to end, as one call for the CLI and the jobs API: dataset + checkpoint -> progress, weights, summary."""

from __future__ import annotations

from pathlib import Path

from sarm.data.lerobot import LeRobotDataset
from sarm.data.validate import InvalidDatasetError, find_problems
from sarm.rabc.files import write_progress, write_summary, write_weights
from sarm.rabc.progress import DatasetProgress, EngineHandle, OnEpisode, ShouldStop, dataset_progress
from sarm.rabc.weights import RabcParams, RabcSummary, compute, summarize
from sarm.scoring.options import EngineOptions
from sarm.training.checkpoint import CheckpointError


def weigh(progress: DatasetProgress, params: RabcParams, out_dir: Path, head: str = "sparse") -> RabcSummary:
    """Weights and summary from per-frame progress (ours or another tool's) of `head` (sparse or dense), written
    beside it in `out_dir`."""
    result = compute([e.head(head) for e in progress.episodes], params)
    summary = summarize(result, [e.episode_index for e in progress.episodes])
    write_weights(progress, result, params, out_dir)
    write_summary(summary, params, progress.provenance, out_dir)
    return summary


def run_rabc(
    dataset_dir: Path,
    checkpoint: Path,
    params: RabcParams,
    out_dir: Path,
    stride: int = 1,
    on_episode: OnEpisode | None = None,
    should_stop: ShouldStop | None = None,
    options: EngineOptions | None = None,
    engine: EngineHandle | None = None,
    head: str = "sparse",
    device: str = "cpu",
) -> RabcSummary:
    """Score every frame of `dataset_dir` with `checkpoint`, then write OUT/sarm_progress.parquet,
    rabc_weights.parquet and rabc_summary.json (see sarm.rabc.files). Raises Cancelled, before writing
    anything, when `should_stop()` turns true; see `dataset_progress` for the callbacks, the engine and `device`."""
    ds = open_inputs(dataset_dir, checkpoint if engine is None else None)
    progress = dataset_progress(ds, checkpoint, stride, on_episode, should_stop, options, engine, device)
    write_progress(progress, out_dir)
    return weigh(progress, params, out_dir, head)


def open_inputs(dataset_dir: Path, checkpoint: Path | None) -> LeRobotDataset:
    """The dataset, once it and the checkpoint (unless an engine already holds the model: None) are known to exist and
    the dataset is valid (one clear error)."""
    if not dataset_dir.is_dir():
        raise FileNotFoundError(f"dataset {dataset_dir} does not exist")
    if checkpoint is not None and not checkpoint.is_dir():
        raise CheckpointError(f"checkpoint {checkpoint} does not exist")
    ds = LeRobotDataset(dataset_dir)  # not a LeRobot dataset at all: one clear line
    # Annotations are not needed: RA-BC only reads frames, and the checkpoint brings the stages.
    problems = find_problems(dataset_dir, require_annotations=False)
    if problems:
        raise InvalidDatasetError(dataset_dir, problems)
    return ds
