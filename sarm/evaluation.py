"""`sarm eval`: how well checkpoints track progress on held-out demos (SARM.md, "How results are judged").

Per checkpoint: VOC (Spearman of predicted progress vs time) on successful demos, demo MSE against the
ground-truth stage-aware progress (overall and per quality), stage accuracy (stage-label checkpoints whose
stages include the data's), AUROC of final progress separating successful from failed demos, and stage
flicker: how often the predicted stage (argmax at every scored frame) changes per episode, against how often the
ground-truth stage does (per task and overall; a ratio near 1 is a steady curve, well above 1 is flicker).

Scores come from the scoring engine over the dataset's stored embeddings. `engine="onnxruntime"` (the default) runs
the heads graph of the checkpoint's exported repository, the one `sarm rabc` and the gateway run (exported once and
cached, sarm.scoring.repository), in ONNX Runtime; `engine="torch"` runs the checkpoint's PyTorch heads. The two agree
within the export parity tolerance (tests/core/test_eval_engine.py). A checkpoint that cannot be exported (one that
records no camera resolution) is scored in PyTorch, and its metrics say so (`engine`, `engine_note`).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal, get_args

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch
from scipy.stats import rankdata, spearmanr

from sarm.data.lerobot import LeRobotDataset
from sarm.data.validate import require_valid
from sarm.device import CPU_PROVIDER, CUDA_PROVIDER, DeviceError, onnx_providers, resolve_device
from sarm.embeddings import DatasetEmbeddings, load_embeddings, require_same_encoders
from sarm.model.labels import progress_from_stage_tau, regress_labels, regress_start, stage_tau_labels
from sarm.model.modeling_sarm import SARM
from sarm.model.progress import ProgressFilter
from sarm.model.windows import WINDOW_FRAMES, stride_frames
from sarm.scoring.curve import ScoringOptions
from sarm.scoring.engine import Encoded, Engine, EngineCaches, Instruction, instruction_key
from sarm.scoring.metrics import EngineMetrics
from sarm.scoring.options import EngineOptions
from sarm.scoring.pytorch import EpisodeScores
from sarm.scoring.torch_backend import TorchBackend, checkpoint_manifest
from sarm.training.checkpoint import CheckpointError, CheckpointInfo, load_checkpoint, load_info
from sarm.training.data_identity import Overlap, dataset_identity, training_overlap

EvalEngine = Literal["onnxruntime", "torch"]
EVAL_ENGINES: tuple[str, ...] = get_args(EvalEngine)


@dataclass(frozen=True)
class Placement:
    """Where `sarm eval` scores: the engine, the torch device (the torch engine, and checkpoints that cannot be
    exported) and ONNX Runtime's execution providers (the onnxruntime engine)."""

    engine: EvalEngine
    torch_device: torch.device
    providers: tuple[str, ...] = (CPU_PROVIDER,)

    @property
    def device(self) -> str:
        """The device the engine runs on: cuda or cpu."""
        if self.engine == "torch":
            return self.torch_device.type
        return "cuda" if self.providers[0] == CUDA_PROVIDER else "cpu"


def placement(engine: str, device: str) -> Placement:
    """`--engine` and `--device` resolved: a missing GPU first (one line, before any loading), then, for ONNX
    Runtime, its CUDA provider (onnxruntime-gpu) for cuda, or the one line that says how to do without."""
    if engine not in EVAL_ENGINES:
        raise ValueError(f"--engine must be one of {', '.join(EVAL_ENGINES)}; got {engine!r}")
    torch_device = resolve_device(device)
    if engine == "torch":
        return Placement("torch", torch_device)
    try:
        providers = onnx_providers(device)
    except DeviceError as error:
        raise DeviceError(f"{error}; or score in PyTorch on the GPU with --engine torch") from error
    return Placement("onnxruntime", torch_device, tuple(providers))


@dataclass
class EpisodeResult:
    episode: int
    quality: str
    success: bool | None
    true_progress: np.ndarray
    true_stage: np.ndarray  # ground-truth stage class per frame (the dataset's vocabulary)
    scores: EpisodeScores
    task: str


def success_auroc(final: np.ndarray, success: np.ndarray) -> float | None:
    """P(final progress of a successful demo > that of a failed one), ties count half (Mann–Whitney)."""
    pos, neg = int(success.sum()), int((~success).sum())
    if pos == 0 or neg == 0:
        return None
    ranks = rankdata(final)
    return float((ranks[success].sum() - pos * (pos + 1) / 2) / (pos * neg))


def value_order_correlation(progress: np.ndarray) -> float:
    """Spearman rank correlation of predicted progress with time (GVL's VOC); 0 for a constant curve."""
    if np.ptp(progress) == 0:
        return 0.0
    return float(spearmanr(progress, np.arange(len(progress))).statistic)


def filtered_progress(scores: EpisodeScores, progress_filter: ProgressFilter) -> np.ndarray:
    """A fresh filter's smoothed progress over the scored frames, in order, as the gateway runs it."""
    steps = zip(scores.frame_index, scores.progress, scores.confidence, strict=True)
    return np.array([progress_filter.update(int(t), float(v), float(c)) for t, v, c in steps])


def served_progress(scores: EpisodeScores, fps: float) -> np.ndarray:
    """The smoothed progress the gateway serves beside the raw one: its default filter over the scored frames."""
    progress_filter = ScoringOptions().smoother(fps)
    assert progress_filter is not None  # smoothing is on by default
    return filtered_progress(scores, progress_filter)


def curve_metrics(results: list[EpisodeResult], curves: dict[int, np.ndarray]) -> dict[str, Any]:
    """VOC on successful demos (and on clean ones), demo MSE and success AUROC of one progress curve per episode."""
    successful = [r for r in results if r.success is not False]
    vocs = [value_order_correlation(curves[r.episode]) for r in successful]
    clean_vocs = [value_order_correlation(curves[r.episode]) for r in successful if r.quality == "clean"]
    labelled = [r for r in results if r.success is not None]
    return {
        "voc_mean": float(np.mean(vocs)) if vocs else None,
        "voc_episodes": len(vocs),
        "voc_clean": float(np.mean(clean_vocs)) if clean_vocs else None,
        "voc_clean_episodes": len(clean_vocs),
        "demo_mse": float(np.mean([np.mean((curves[r.episode] - r.true_progress) ** 2) for r in results])),
        "success_auroc": success_auroc(
            np.array([curves[r.episode][-1] for r in labelled]), np.array([bool(r.success) for r in labelled])
        ),
    }


def stage_changes(stages: np.ndarray) -> int:
    """Frames whose stage differs from the frame before: 0 for a constant sequence, A-B-A counts 2."""
    stages = np.asarray(stages)
    return int(np.count_nonzero(stages[1:] != stages[:-1]))


def flicker_summary(predicted: list[int], annotated: list[int]) -> dict[str, Any]:
    """Mean stage changes per episode, predicted and annotated, and their ratio (None when the truth never
    changes stage, where any change is flicker but no ratio exists)."""
    if len(predicted) != len(annotated):
        raise ValueError(f"got {len(predicted)} predicted and {len(annotated)} annotated episodes")
    if not predicted:
        return {"episodes": 0, "predicted_changes": None, "annotated_changes": None, "ratio": None}
    pred, true = float(np.mean(predicted)), float(np.mean(annotated))
    return {
        "episodes": len(predicted),
        "predicted_changes": pred,
        "annotated_changes": true,
        "ratio": pred / true if true > 0 else None,
    }


def stage_flicker(tasks: list[str], predicted: list[int], annotated: list[int]) -> dict[str, Any]:
    """`flicker_summary` over all episodes ("overall") and per task instruction ("by_task")."""
    by_task = {
        task: flicker_summary(
            [p for t, p in zip(tasks, predicted, strict=True) if t == task],
            [a for t, a in zip(tasks, annotated, strict=True) if t == task],
        )
        for task in dict.fromkeys(tasks)
    }
    return {"overall": flicker_summary(predicted, annotated), "by_task": by_task}


def fixed_stride_share(lengths: list[int], stride: int) -> float:
    """Share of frames whose window uses the fixed stride (t ≥ 8·stride; younger frames space their window
    evenly over the episode so far, see sarm.model.windows)."""
    total = sum(lengths)
    fixed = sum(max(0, n - (WINDOW_FRAMES - 1) * stride) for n in lengths)
    return fixed / total if total else 0.0


def checkpoint_classes(classes: list[str], vocabulary: list[str]) -> np.ndarray:
    """The checkpoint's class number of each dataset stage (`vocabulary`, in the dataset's order) that it knows:
    classes are matched by name, as the two number them differently."""
    return np.array([classes.index(name) for name in vocabulary if name in classes], np.int64)


def ground_truth_progress(
    ds: LeRobotDataset, episode: int, proportions: dict[str, float]
) -> tuple[np.ndarray, np.ndarray]:
    """Stage-aware progress and stage class per frame from the episode's annotation and the dataset's ᾱ
    (`ds.proportions()`, read once by the caller for all episodes)."""
    vocabulary = list(proportions)
    meta = ds.episode(episode)
    labels = stage_tau_labels(ds.require_annotation(episode), meta.length, vocabulary)
    labels = regress_labels(labels, regress_start(meta.row))  # a give-up retreat falls back (labels.py)
    return progress_from_stage_tau(labels.stage, labels.tau, list(proportions.values())), labels.stage


async def _score_with(
    engine: Engine, ds: LeRobotDataset, embeddings: DatasetEmbeddings, stride: int
) -> dict[int, EpisodeScores]:
    """Every frame of every episode, from the stored embeddings, through the scoring engine (the loop every front
    end uses: windows, the score cache's keys, batching), whatever its backend."""
    manifest = engine.manifest
    out = {}
    for meta in ds.episodes:
        frames = embeddings.frames[meta.index]
        if frames.ndim == 2:
            frames = frames[:, None]
        key = instruction_key(manifest.text_encoder.fingerprint, meta.task)
        instruction = Instruction(np.asarray(embeddings.text[meta.task], np.float32), key)
        source = Encoded.stored(frames.astype(np.float32, copy=False), f"{ds.root}|{meta.index}")
        if manifest.state_dim:  # a model trained with `--state` reads the episode's joint state
            state = np.asarray(ds.column(meta.index, manifest.state_key), np.float32)
            source = source.with_state(engine.state(state, meta.length, f"episode {meta.index}"))
        t = list(range(meta.length))
        scores = await engine.score_at(source, t, stride, instruction)
        probs = np.stack([s.stage_probs for s in scores])
        out[meta.index] = EpisodeScores(
            frame_index=np.asarray(t, np.int64),
            stage=probs.argmax(-1),
            stage_probs=probs,
            tau=np.array([s.tau for s in scores], np.float32),
            progress=np.array([s.progress for s in scores], np.float32),
            confidence=np.array([s.confidence for s in scores], np.float32),
        )
    return out


async def _score_episodes(
    checkpoint: Path,
    model: SARM,
    info: CheckpointInfo,
    ds: LeRobotDataset,
    embeddings: DatasetEmbeddings,
    stride: int,
    device: torch.device,
) -> dict[int, EpisodeScores]:
    """`_score_with` on the PyTorch backend: the checkpoint's heads on `device`, no export."""
    from sarm.encoders.registry import text_encoder_for

    options = EngineOptions(frame_cache_entries=0, score_cache_entries=0)
    manifest = checkpoint_manifest(checkpoint, model, info)
    text_encoder = text_encoder_for(manifest.text_encoder)  # checked against the checkpoint's by the engine
    engine = Engine(
        manifest,
        TorchBackend(model, device=device),
        text_encoder,
        options,
        EngineCaches.build(options, manifest, manifest.text_encoder.fingerprint),
        EngineMetrics(),
    )
    try:
        return await _score_with(engine, ds, embeddings, stride)
    finally:
        await engine.close()


def _score_on_onnxruntime(
    checkpoint: Path, ds: LeRobotDataset, embeddings: DatasetEmbeddings, stride: int, providers: Sequence[str]
) -> dict[int, EpisodeScores]:
    """`_score_with` on the local ONNX Runtime backend of the checkpoint's exported repository: `sarm rabc`'s engine
    (sarm.rabc.progress.EngineHandle: the cached export, no frame or score cache), on `providers`."""
    from sarm.rabc.progress import EngineHandle

    handle = EngineHandle.open(checkpoint, EngineOptions(), providers=list(providers))
    try:
        scores: dict[int, EpisodeScores] = handle.run(_score_with(handle.engine, ds, embeddings, stride))
        return scores
    finally:
        handle.close()


def _unexportable(checkpoint: Path) -> str | None:
    """Why the checkpoint has no exported repository (then it is scored in PyTorch), or None once it has one (the
    export runs here on first use, cached)."""
    from sarm.scoring.repository import repository_for

    try:
        repository_for(checkpoint)
    except CheckpointError as error:
        return f"scored in PyTorch: no ONNX export ({error})"
    return None


def evaluate_checkpoint(
    checkpoint: Path, ds: LeRobotDataset, device: torch.device | None = None, where: Placement | None = None
) -> tuple[dict[str, Any], list[EpisodeResult]]:
    """The checkpoint's metrics on `ds` and its per-episode results, scored as `where` says (default: ONNX Runtime
    on the CPU; `device`, if given, is the torch device of a checkpoint scored in PyTorch)."""
    where = where or Placement("onnxruntime", device or torch.device("cpu"))
    model, info = load_checkpoint(checkpoint)
    embeddings = load_embeddings(ds, info.frame_encoder["id"])
    require_same_encoders(embeddings, info.frame_encoder, info.text_encoder)
    stride = stride_frames(ds.fps, model.config.stride_seconds)
    columns = set(ds.episodes_table.column_names)
    proportions = ds.proportions() or {}
    vocabulary = list(proportions)
    # Stage accuracy needs every dataset stage to be a checkpoint class (a multi-task model has more).
    classes = model.config.stage_names
    stages_match = info.labels == "stage" and set(vocabulary) <= set(classes)
    checkpoint_class = checkpoint_classes(classes, vocabulary)
    results, correct, counted = [], 0, 0
    note = _unexportable(checkpoint) if where.engine == "onnxruntime" else None
    if where.engine == "onnxruntime" and note is None:
        engine, on = "onnxruntime", where.device
        episode_scores = _score_on_onnxruntime(checkpoint, ds, embeddings, stride, where.providers)
    else:
        engine, on = "torch", where.torch_device.type
        episode_scores = asyncio.run(
            _score_episodes(checkpoint, model, info, ds, embeddings, stride, where.torch_device)
        )
    for meta in ds.episodes:
        scores = episode_scores[meta.index]
        truth, true_stage = ground_truth_progress(ds, meta.index, proportions)
        if stages_match:
            correct += int((scores.stage == checkpoint_class[true_stage]).sum())
            counted += meta.length
        results.append(
            EpisodeResult(
                episode=meta.index,
                quality=str(meta.row["quality"]) if "quality" in columns else "unknown",
                success=bool(meta.row["success"]) if "success" in columns else None,
                true_progress=truth,
                true_stage=true_stage,
                scores=scores,
                task=meta.task,
            )
        )
    successful = [r for r in results if r.success is not False]
    # Degraded demos contain forced drops, where the true progress goes back: the annotation's own VOC on the same
    # demos is the ceiling of voc_mean, and clean demos (monotone truth) show the curve's own steadiness.
    truth_vocs = [value_order_correlation(r.true_progress) for r in successful]
    raw = curve_metrics(results, {r.episode: r.scores.progress for r in results})
    served = curve_metrics(results, {r.episode: served_progress(r.scores, float(ds.fps)) for r in results})
    mse = {r.episode: float(np.mean((r.scores.progress - r.true_progress) ** 2)) for r in results}
    qualities = sorted({r.quality for r in results})
    by_quality = {q: float(np.mean([mse[r.episode] for r in results if r.quality == q])) for q in qualities}
    labelled = [r for r in results if r.success is not None]
    # The predicted stage only means something for stage-label checkpoints (the baseline has one class).
    flicker = (
        stage_flicker(
            [r.task for r in results],
            [stage_changes(r.scores.stage) for r in results],
            [stage_changes(r.true_stage) for r in results],
        )
        if info.labels == "stage"
        else None
    )
    metrics = {
        "checkpoint": str(checkpoint),
        "labels": info.labels,
        "engine": engine,  # what scored this checkpoint: onnxruntime, or torch (asked for, or no export)
        "device": on,
        **({"engine_note": note} if note else {}),
        **raw,
        "voc_annotation": float(np.mean(truth_vocs)) if truth_vocs else None,
        "demo_mse_by_quality": by_quality,
        "demo_mse_episodes": len(mse),
        "stage_accuracy": correct / counted if counted else None,
        "stage_accuracy_frames": counted,
        # The same figures of the smoothed progress the gateway serves by default (sarm.scoring.curve).
        "served": {"smoothing": ScoringOptions().smoothing_settings(), **served},
        "auroc_episodes": {
            "successful": sum(bool(r.success) for r in labelled),
            "failed": sum(not r.success for r in labelled),
        },
        "stage_flicker": flicker,
        "stride_frames": stride,
        "fixed_stride_share": fixed_stride_share([meta.length for meta in ds.episodes], stride),
    }
    return metrics, results


def _plot_examples(path: Path, runs: dict[str, list[EpisodeResult]], fps: float) -> list[str]:
    """One PNG per quality (first episode of each): predicted progress of every checkpoint, raw and as served, vs the
    truth."""
    written = []
    first_run = next(iter(runs.values()))
    for quality in sorted({r.quality for r in first_run}):
        index = next(i for i, r in enumerate(first_run) if r.quality == quality)
        ref = first_run[index]
        fig, ax = plt.subplots(figsize=(7, 3.5))
        seconds = np.arange(len(ref.true_progress)) / fps
        ax.plot(seconds, ref.true_progress, color="black", lw=2, label="ground truth (stage-aware)")
        for name, results in runs.items():
            [line] = ax.plot(seconds, results[index].scores.progress, lw=1.3, label=name)
            served = served_progress(results[index].scores, fps)
            ax.plot(seconds, served, lw=1.0, ls="--", color=line.get_color(), label=f"{name}, served (smoothed)")
        ax.set(
            xlabel="time (s)",
            ylabel="progress",
            ylim=(-0.02, 1.02),
            title=f"episode {ref.episode} ({quality}, success={ref.success})",
        )
        ax.legend(loc="upper left", fontsize=8)
        fig.tight_layout()
        name = f"episode_{ref.episode:03d}_{quality}.png"
        fig.savefig(path / name, dpi=110)
        plt.close(fig)
        written.append(name)
    return written


class InSampleError(ValueError):
    """Evaluation data that overlaps a checkpoint's training data, without --allow-in-sample."""


def check_held_out(checkpoints: list[Path], ds: LeRobotDataset, allow_in_sample: bool) -> dict[Path, Overlap]:
    """Each checkpoint's overlap with `ds`; refuses any overlap unless `allow_in_sample`."""
    identity = dataset_identity(ds)
    overlaps = {c: training_overlap(load_info(c).training, ds, identity) for c in checkpoints}
    clashes = [f"{c}: {o.describe()}" for c, o in overlaps.items() if o.in_sample]
    if clashes and not allow_in_sample:
        raise InSampleError(
            f"--data {ds.root} overlaps the training data of " + "; ".join(clashes) + ". Evaluate on held-out "
            "demos (e.g. `sarm data generate --seed` another seed), or pass --allow-in-sample to report in-sample "
            "figures, marked as such"
        )
    return overlaps


def evaluate(
    checkpoints: list[Path],
    data: Path,
    out: Path,
    allow_in_sample: bool = False,
    device: str = "cpu",
    engine: str = "onnxruntime",
) -> dict[str, Any]:
    """Evaluate checkpoints side by side; writes metrics.json, report.md and plots under `out`.

    Refuses data that overlaps a checkpoint's training data (InSampleError) unless `allow_in_sample`,
    which marks those checkpoints' figures `in_sample` in every output. The heads run in `engine` (onnxruntime:
    the exported graph; torch: PyTorch) on `device` (sarm.device; ONNX Runtime's CUDA provider for cuda).
    """
    where = placement(engine, device)  # first: a missing GPU is one line before any loading
    ds = require_valid(data)
    overlaps = check_held_out(checkpoints, ds, allow_in_sample)
    out.mkdir(parents=True, exist_ok=True)
    names = [c.name if checkpoints.count(c) == 1 else str(c) for c in checkpoints]
    runs, metrics = {}, {}
    for name, checkpoint in zip(names, checkpoints, strict=True):
        metrics[name], runs[name] = evaluate_checkpoint(checkpoint, ds, where=where)
        overlap = overlaps[checkpoint]
        metrics[name]["in_sample"] = overlap.in_sample if overlap.checked != "none" else None
        metrics[name]["held_out_check"] = {**asdict(overlap), "note": overlap.describe()}
    report = {
        "data": str(data),
        "episodes": len(ds.episodes),
        "engine": where.engine,
        "device": where.device,
        "checkpoints": metrics,
    }
    (out / "metrics.json").write_text(json.dumps(report, indent=2))
    plots = _plot_examples(out, runs, ds.fps)
    (out / "report.md").write_text(_markdown(report, plots))
    return report


def _fmt(value: Any) -> str:
    return "n/a" if value is None else f"{value:.4f}" if isinstance(value, float) else str(value)


def _flicker_cell(flicker: dict[str, Any] | None) -> str:
    if not flicker or flicker["predicted_changes"] is None:
        return "n/a"
    ratio = "no annotated change" if flicker["ratio"] is None else f"{flicker['ratio']:.2f}x"
    return f"{flicker['predicted_changes']:.2f} vs {flicker['annotated_changes']:.2f} ({ratio})"


def _markdown(report: dict[str, Any], plots: list[str]) -> str:
    in_sample = [name for name, m in report["checkpoints"].items() if m.get("in_sample")]
    lines = [
        f"# SARM evaluation on `{report['data']}` ({report['episodes']} episodes)",
        "",
        *(
            [
                f"**In-sample**: this data overlaps the training data of {', '.join(in_sample)}; their figures do not "
                "measure generalisation.",
                "",
            ]
            if in_sample
            else []
        ),
        "| checkpoint | labels | data | VOC (successful) | annotation's VOC | VOC (clean) | demo MSE | stage accuracy "
        "| success AUROC | stage changes / episode: predicted vs annotated (ratio) | fixed-stride frames | scored by |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, m in report["checkpoints"].items():
        data = {True: "in-sample", False: "held out", None: "unknown"}[m.get("in_sample")]
        lines.append(
            f"| {name} | {m['labels']} | {data} | {_fmt(m['voc_mean'])} (n={m['voc_episodes']}) | "
            f"{_fmt(m.get('voc_annotation'))} | {_fmt(m.get('voc_clean'))} (n={m.get('voc_clean_episodes', 0)}) | "
            f"{_fmt(m['demo_mse'])} | {_fmt(m['stage_accuracy'])} | {_fmt(m['success_auroc'])} | "
            f"{_flicker_cell(m['stage_flicker'] and m['stage_flicker']['overall'])} | "
            f"{m['fixed_stride_share']:.0%} (stride {m['stride_frames']} frames) | "
            f"{m.get('engine', 'n/a')} ({m.get('device', 'n/a')}) |"
        )
    served = {name: m["served"] for name, m in report["checkpoints"].items() if m.get("served")}
    if served:
        settings = next(iter(served.values()))["smoothing"]
        lines += [
            "",
            f"The progress the gateway serves smoothed by default ({', '.join(f'{k} {v}' for k, v in settings.items())}"
            "; causal):",
            "",
            "| checkpoint | VOC (successful) | VOC (clean) | demo MSE | success AUROC |",
            "| --- | --- | --- | --- | --- |",
            *(
                f"| {name} | {_fmt(m['voc_mean'])} | {_fmt(m['voc_clean'])} | {_fmt(m['demo_mse'])} | "
                f"{_fmt(m['success_auroc'])} |"
                for name, m in served.items()
            ),
        ]
    notes = [f"- {name}: {m['engine_note']}" for name, m in report["checkpoints"].items() if m.get("engine_note")]
    if notes:
        lines += ["", *notes]
    by_task = [(name, m["stage_flicker"]["by_task"]) for name, m in report["checkpoints"].items() if m["stage_flicker"]]
    if by_task:
        lines += [
            "",
            "Stage changes per episode by task (predicted vs annotated, ratio; argmax stage at every frame):",
            "",
            "| task | episodes | " + " | ".join(f"stage changes: {name}" for name, _ in by_task) + " |",
            "| --- " * (2 + len(by_task)) + "|",
        ]
        first = by_task[0][1]
        for task, f in first.items():
            cells = " | ".join(_flicker_cell(tasks[task]) for _, tasks in by_task)
            lines.append(f"| {task} | {f['episodes']} | {cells} |")
    lines += [
        "",
        "Demo MSE by quality:",
        "",
        "| checkpoint | " + " | ".join(next(iter(report["checkpoints"].values()))["demo_mse_by_quality"]) + " |",
    ]
    lines.append("| --- " * (1 + len(next(iter(report["checkpoints"].values()))["demo_mse_by_quality"])) + "|")
    for name, m in report["checkpoints"].items():
        lines.append(f"| {name} | " + " | ".join(_fmt(v) for v in m["demo_mse_by_quality"].values()) + " |")
    lines += ["", "## Predicted vs true progress", ""] + [f"![{p}]({p})" for p in plots]
    return "\n".join(lines) + "\n"
