"""Issue #11 speed proof: a paper-size LeRobot SARM with CLIP ViT-B/32 labels a 128 px LeRobot dataset end to end.

Everything is built here, in a temp dir, with random weights (same cost as trained ones; nothing is downloaded):
- a LeRobot 0.6.1 SARM `save_pretrained` folder: config.json with LeRobot's SARMConfig fields (dual heads,
  hidden_dim 768, 8 layers, 12 heads, n_obs_steps 8, frame_gap 30, max_state_dim 32, 512-d image/text, the insertion
  dataset's stages and proportions), model.safetensors with LeRobot's parameter names (LeRobotSARM's state dict) and
  the processor files of ../shared/fixtures/lerobot_sarm_insertion/checkpoint (the dataset's state statistics);
- a CLIP ViT-B/32 (vision 768 wide, 12 layers, patch 32, image 224; text 512 wide, 12 layers; projection 512) saved
  with save_pretrained beside the fixture CLIP's tokenizer and processor files.
It is imported with `sarm import lerobot`, exported once into the model-repository cache (timed apart: what the
first `sarm rabc` of a checkpoint does), then `sarm rabc` (the CLI, in process) labels a copy of
../shared/fixtures/lerobot_aloha_insertion (its first `--episodes` episodes; 128x128 video, 50 fps) from video, at
each stride and thread count, through the scoring engine on the exported graphs (ONNX Runtime). Per run: frames
labelled, wall seconds and frames/s end to end; and, timed by wrappers around the real calls, the seconds spent
decoding video, in CLIP (the host-side crop counted apart) and in the SARM heads, with CLIP frames/s and heads
windows/s. The 1-minute load average before and after each run is recorded next to it.
Usage:
    .venv/bin/python bench/lerobot_speed.py [--episodes 2] [--strides 1 8] [--threads 1 2] [--profile]
Writes bench/results/lerobot_speed.json; with --profile also a cProfile of the first run (top functions by cumulative
and own time) into that JSON. LeRobot's own compute_sarm_progress does 0.77 frames/s for this model on this 2-core
machine; the target is >= 10 frames/s.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import resource
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch
from rich.console import Console
from rich.table import Table
from safetensors.torch import save_file
from transformers import CLIPConfig, CLIPModel
from typer.testing import CliRunner

import sarm.scoring.images as scoring_images
from sarm.cli import app
from sarm.data.lerobot import LeRobotDataset
from sarm.lerobot.config import parse_config
from sarm.lerobot.modeling import LeRobotSARM
from sarm.scoring.engine import Engine
from sarm.scoring.repository import CACHE_ENV, repository_for

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT.parent / "shared" / "fixtures"
SARM_FIXTURE = FIXTURES / "lerobot_sarm_insertion"
DATASET_FIXTURE = FIXTURES / "lerobot_aloha_insertion"
RESULTS = ROOT / "bench" / "results" / "lerobot_speed.json"
TARGET_FPS = 10.0
LEROBOT_FPS = 0.77  # LeRobot 0.6.1 compute_sarm_progress, same model, this machine (issue #11)
# Paper size (SARM: 8 layers, 768 wide, 12 heads); the rest is the fixture's LeRobot config.
PAPER = {"hidden_dim": 768, "num_layers": 8, "num_heads": 12}
PROCESSOR_FILES = (
    "policy_preprocessor.json",
    "policy_preprocessor_step_2_normalizer_processor.safetensors",
    "policy_postprocessor.json",
)
CLIP_FILES = ("processor_config.json", "tokenizer.json", "tokenizer_config.json")


def build_lerobot_checkpoint(folder: Path, seed: int = 0) -> dict[str, Any]:
    """A paper-size LeRobot SARM folder with random weights, in LeRobot's save_pretrained layout."""
    folder.mkdir(parents=True)
    config = json.loads((SARM_FIXTURE / "checkpoint" / "config.json").read_text()) | PAPER
    (folder / "config.json").write_text(json.dumps(config, indent=4))
    torch.manual_seed(seed)
    model = LeRobotSARM(parse_config(config))
    # LeRobotSARM's parameter names are LeRobot's; the breakpoint buffers are ours (derived from the config).
    state = {k: v.contiguous() for k, v in model.state_dict().items() if not k.startswith("breakpoints_")}
    save_file(state, str(folder / "model.safetensors"))
    for name in PROCESSOR_FILES:
        shutil.copy(SARM_FIXTURE / "checkpoint" / name, folder / name)
    return {"parameters": sum(v.numel() for v in state.values()), **PAPER}


def build_clip(folder: Path, seed: int = 0) -> dict[str, Any]:
    """A random CLIP ViT-B/32 (openai/clip-vit-base-patch32's shapes) saved with its processor files."""
    config = CLIPConfig(
        text_config={
            "hidden_size": 512,
            "intermediate_size": 2048,
            "num_attention_heads": 8,
            "num_hidden_layers": 12,
            "max_position_embeddings": 77,
            "hidden_act": "quick_gelu",
        },
        vision_config={
            "hidden_size": 768,
            "intermediate_size": 3072,
            "num_attention_heads": 12,
            "num_hidden_layers": 12,
            "patch_size": 32,
            "image_size": 224,
            "hidden_act": "quick_gelu",
        },
        projection_dim=512,
    )
    torch.manual_seed(seed)
    model = CLIPModel(config).eval()
    model.save_pretrained(folder)
    for name in CLIP_FILES:
        shutil.copy(SARM_FIXTURE / "clip" / name, folder / name)
    return {
        "vision_parameters": sum(p.numel() for p in model.vision_model.parameters()),
        "text_parameters": sum(p.numel() for p in model.text_model.parameters()),
    }


def dataset_subset(target: Path, episodes: int) -> dict[str, int]:
    """A copy of the aloha insertion dataset holding its first `episodes` episodes (the video file is kept whole:
    episodes address it by timestamp)."""
    shutil.copytree(DATASET_FIXTURE, target)
    for path in target.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)  # the fixture is read-only
    episode_files = sorted((target / "meta" / "episodes").glob("chunk-*/file-*.parquet"))
    table = pa.concat_tables([pq.read_table(f) for f in episode_files])
    total = len(table)
    if not 1 <= episodes <= total:
        raise SystemExit(f"--episodes must be 1..{total}")
    kept = table.filter(pc.less(table.column("episode_index"), episodes))
    for f in episode_files[1:]:
        f.unlink()
    pq.write_table(kept, episode_files[0])
    frames = 0
    for f in sorted((target / "data").glob("chunk-*/file-*.parquet")):
        data = pq.read_table(f)
        data = data.filter(pc.less(data.column("episode_index"), episodes))
        pq.write_table(data, f)
        frames += len(data)
    info_path = target / "meta" / "info.json"
    info = json.loads(info_path.read_text())
    info.update(total_episodes=episodes, total_frames=frames, splits={"train": f"0:{episodes}"})
    info_path.write_text(json.dumps(info, indent=4))
    return {"episodes": episodes, "frames": frames}


def cpu_seconds() -> float:
    """User + system CPU seconds of this process, all its threads (torch's intra-op pool included)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@dataclass
class Stage:
    seconds: float = 0.0
    cpu: float = 0.0
    calls: int = 0
    items: int = 0


@dataclass
class Timers:
    stages: dict[str, Stage] = field(default_factory=dict)

    def wrap(
        self, name: str, fn: Callable[..., Any], count: Callable[..., int], coroutine: bool = False
    ) -> Callable[..., Any]:
        """`fn` (a coroutine function when `coroutine`), timed into stage `name`."""
        stage = self.stages.setdefault(name, Stage())

        @contextmanager
        def measured(*args: Any, **kwargs: Any) -> Iterator[None]:
            start, cpu = time.perf_counter(), cpu_seconds()
            try:
                yield
            finally:
                stage.seconds += time.perf_counter() - start
                stage.cpu += cpu_seconds() - cpu
                stage.calls += 1
                stage.items += count(*args, **kwargs)

        async def timed_coroutine(*args: Any, **kwargs: Any) -> Any:
            with measured(*args, **kwargs):
                return await fn(*args, **kwargs)

        def timed(*args: Any, **kwargs: Any) -> Any:
            with measured(*args, **kwargs):
                return fn(*args, **kwargs)

        return timed_coroutine if coroutine else timed


@contextmanager
def timed_stages() -> Iterator[Timers]:
    """Time the real calls of the labelling path (decode, CLIP preprocessing and forward, heads), unchanged."""
    timers = Timers()
    patches: list[tuple[Any, str, Any, bool]] = [
        (
            LeRobotDataset,
            "frames",
            lambda self, episode, camera=None, indices=None: 0 if indices is None else len(indices),
            False,
        ),
        (Engine, "_encode_rows", lambda self, images: len(images), True),
        (scoring_images, "clip_crop", lambda image, size=224: 1, False),  # on the decode threads, within "clip"
        (Engine, "_heads_rows", lambda self, *inputs: len(inputs[0]), True),
    ]
    names = {"frames": "decode", "_encode_rows": "clip", "clip_crop": "clip_preprocess", "_heads_rows": "heads"}
    originals = [(owner, attr, getattr(owner, attr)) for owner, attr, _, _ in patches]
    try:
        for owner, attr, count, coroutine in patches:
            setattr(owner, attr, timers.wrap(names[attr], getattr(owner, attr), count, coroutine))
        yield timers
    finally:
        for owner, attr, original in originals:
            setattr(owner, attr, original)


def label(dataset: Path, checkpoint: Path, out: Path, stride: int, threads: int) -> None:
    result = CliRunner().invoke(
        app,
        [
            "rabc",
            str(dataset),
            "--checkpoint",
            str(checkpoint),
            "--chunk-size",
            "10",
            "--stride",
            str(stride),
            "--threads",
            str(threads),
            "--out",
            str(out),
        ],
    )
    if result.exit_code != 0:
        raise RuntimeError(f"sarm rabc failed ({result.exit_code}): {result.output}\n{result.exception!r}")


def run_once(
    dataset: Path, checkpoint: Path, work: Path, frames: int, stride: int, threads: int, profile: bool
) -> dict[str, Any]:
    out = work / f"out_s{stride}_t{threads}"
    load_before = os.getloadavg()
    profiler = cProfile.Profile() if profile else None
    with timed_stages() as timers:
        start, cpu = time.perf_counter(), cpu_seconds()
        if profiler is not None:
            profiler.enable()
        label(dataset, checkpoint, out, stride, threads)
        if profiler is not None:
            profiler.disable()
        seconds = time.perf_counter() - start
        cpu = cpu_seconds() - cpu
    load_after = os.getloadavg()
    progress = pq.read_table(out / "sarm_progress.parquet")
    if len(progress) != frames or not np.all(np.isfinite(progress.column("progress_sparse").to_numpy())):
        raise RuntimeError(f"stride {stride}: expected {frames} finite progress values")
    st = timers.stages
    # The crop runs on the decode threads before the encoder call: its time is apart from "clip" (the forward).
    clip_forward = st["clip"].seconds
    row: dict[str, Any] = {
        "stride": stride,
        "threads": threads,
        "frames": frames,
        "seconds": seconds,
        "frames_per_s": frames / seconds,
        # The cores were shared: the CPU time this process got, and what the run would take with `threads` cores
        # of its own at the same per-CPU-second speed (an estimate: it assumes the threads scale perfectly).
        "cpu_seconds": cpu,
        "cpu_share": cpu / seconds,
        "frames_per_cpu_s": frames / cpu,
        "frames_per_s_own_cores_est": frames / (cpu / threads),
        "decode_seconds": st["decode"].seconds,
        "decoded_frames": st["decode"].items,
        "clip_frames": st["clip"].items,
        "clip_seconds": st["clip"].seconds,
        "clip_preprocess_seconds": st["clip_preprocess"].seconds,
        "clip_forward_seconds": clip_forward,
        "clip_frames_per_s": st["clip"].items / st["clip"].seconds if st["clip"].seconds else None,
        "clip_cpu_seconds": st["clip"].cpu,
        "clip_frames_per_cpu_s": st["clip"].items / st["clip"].cpu if st["clip"].cpu else None,
        "heads_windows": st["heads"].items,
        "heads_seconds": st["heads"].seconds,
        "heads_windows_per_s": st["heads"].items / st["heads"].seconds if st["heads"].seconds else None,
        "heads_cpu_seconds": st["heads"].cpu,
        "heads_windows_per_cpu_s": st["heads"].items / st["heads"].cpu if st["heads"].cpu else None,
        "other_seconds": seconds
        - st["decode"].seconds
        - st["clip"].seconds
        - st["clip_preprocess"].seconds
        - st["heads"].seconds,
        "loadavg_1m_before": load_before[0],
        "loadavg_1m_after": load_after[0],
        "loadavg_before": list(load_before),
        "loadavg_after": list(load_after),
    }
    if profiler is not None:
        row["profile"] = profile_summary(profiler)
    return row


def profile_summary(profiler: cProfile.Profile, top: int = 15) -> dict[str, list[str]]:
    summary = {}
    for key in ("cumulative", "tottime"):
        text = io.StringIO()
        pstats.Stats(profiler, stream=text).sort_stats(key).print_stats(top)
        lines = [line.rstrip() for line in text.getvalue().splitlines() if line.strip()]
        summary[key] = lines[-(top + 1) :]
    return summary


def print_table(rows: list[dict[str, Any]], console: Console) -> None:
    table = Table(
        title=f"sarm rabc, imported paper-size LeRobot SARM + CLIP ViT-B/32 (target >= {TARGET_FPS:g} "
        f"frames/s; LeRobot {LEROBOT_FPS} frames/s); shared cores: CPU share = CPU s / wall s"
    )
    columns = (
        "stride",
        "threads",
        "frames",
        "seconds",
        "frames/s",
        "CPU share",
        "frames/s own cores (est)",
        "decode s",
        "CLIP frames",
        "CLIP s (preproc)",
        "CLIP frames/s",
        "CLIP frames/CPU s",
        "windows",
        "heads s",
        "windows/s",
        "windows/CPU s",
        "other s",
        "load 1m",
    )
    for column in columns:
        table.add_column(column, justify="right")
    for r in rows:
        table.add_row(
            str(r["stride"]),
            str(r["threads"]),
            str(r["frames"]),
            f"{r['seconds']:.1f}",
            f"[{'green' if r['frames_per_s'] >= TARGET_FPS else 'red'}]{r['frames_per_s']:.2f}",
            f"{r['cpu_share']:.2f}",
            f"{r['frames_per_s_own_cores_est']:.2f}",
            f"{r['decode_seconds']:.1f}",
            str(r["clip_frames"]),
            f"{r['clip_seconds']:.1f} ({r['clip_preprocess_seconds']:.1f})",
            f"{r['clip_frames_per_s']:.2f}",
            f"{r['clip_frames_per_cpu_s']:.2f}",
            str(r["heads_windows"]),
            f"{r['heads_seconds']:.1f}",
            f"{r['heads_windows_per_s']:.2f}",
            f"{r['heads_windows_per_cpu_s']:.2f}",
            f"{r['other_seconds']:.1f}",
            f"{r['loadavg_1m_before']:.1f}→{r['loadavg_1m_after']:.1f}",
        )
    console.print(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--episodes", type=int, default=2, help="first N episodes of the 8 (3308 frames in all)")
    parser.add_argument("--strides", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--profile", action="store_true", help="cProfile the first run")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    console = Console(width=240)  # the table is wide; never wrap it into unreadable columns
    with tempfile.TemporaryDirectory(prefix="lerobot_speed_") as tmp:
        work = Path(tmp)
        with console.status("building the paper-size LeRobot SARM and CLIP ViT-B/32 (random weights)"):
            sarm_info = build_lerobot_checkpoint(work / "lerobot_sarm")
            clip_info = build_clip(work / "clip")
            data_info = dataset_subset(work / "dataset", args.episodes)
        imported = CliRunner().invoke(
            app,
            [
                "import",
                "lerobot",
                str(work / "lerobot_sarm"),
                "--clip",
                str(work / "clip"),
                "--out",
                str(work / "ckpt"),
            ],
        )
        if imported.exit_code != 0:
            raise SystemExit(f"sarm import lerobot failed: {imported.output}")
        os.environ[CACHE_ENV] = str(work / "cache")  # this run's export, not the user's cache
        with console.status("exporting the imported model's graphs (once per checkpoint)"):
            started = time.perf_counter()
            repository_for(work / "ckpt")
            export_seconds = time.perf_counter() - started
        console.print(f"exported in {export_seconds:.1f} s")
        rows: list[dict[str, Any]] = []
        for stride in args.strides:
            for threads in args.threads:
                console.print(f"labelling {data_info['frames']} frames, stride {stride}, {threads} thread(s) …")
                rows.append(
                    run_once(
                        work / "dataset",
                        work / "ckpt",
                        work,
                        data_info["frames"],
                        stride,
                        threads,
                        args.profile and not rows,
                    )
                )
                print_table(rows[-1:], console)
    print_table(rows, console)
    report = {
        "what": "sarm import lerobot + sarm rabc (in process, from video) with a paper-size LeRobot SARM (dual, "
        "random weights) and a random CLIP ViT-B/32",
        "target_frames_per_s": TARGET_FPS,
        "lerobot_frames_per_s": LEROBOT_FPS,
        "model": sarm_info,
        "clip": clip_info,
        "dataset": {"source": str(DATASET_FIXTURE.name), **data_info, "resolution": "128x128", "fps": 50},
        "machine": {
            "cpus": os.cpu_count(),
            "torch": torch.__version__,
            "note": "2-core machine shared with other engineers; see each run's load average",
        },
        "export_seconds": export_seconds,
        "runs": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    console.print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
