"""Issue #13's CPU targets that had no benchmark, measured in one run on this machine:

0. The ceiling: the default model's exported frame encoder alone (ONNX Runtime through the gateway's LocalBackend),
   images/s at batch 1, 8 and 32 on each thread count used below. The default model's EfficientNet-Lite0 resizes
   128 px frames to 224 inside its graph ("224squash"), so every path that encodes every frame is bound by it.
1. `sarm rabc` end to end (decoding included) with the default model (model_repo/default/checkpoint) on a 128 px
   AV1 LeRobot dataset written here by our own writer (LeRobotWriter, codec av1 = libsvtav1; no stored embeddings,
   so every frame is decoded), stride 1, `--threads` 1 and 2, the CLI in process. Beside it, decoding alone
   (LeRobotDataset.frames over every episode) and, timed by wrappers around the real calls, the seconds in
   decoding, the encoder and the heads within each run. Target >= 50 frames/s.
2. A 30 s 640x480 30 fps H.264 video (libx264, moving textured content) uploaded to POST /v1/videos:score of real
   gateways (`sarm serve`, own processes, local ONNX Runtime backend, default model, HTTP API on; one per
   `--upload-threads` value of SARM_INTRA_OP_THREADS, all up at once, uploads interleaved), timed by the client
   (httpx): `--videos` distinct videos the first time (nothing cached), then the first one again (warm).
   Beside it, the gateway's own VideoReader decoding and resizing one video to 128 px in this process. With
   `--profile` (default) one more distinct video is uploaded under py-spy and the gateway's active time is split
   into parts.
   Target: first time <= 5 s.
3. `sarm embed` with ONNX Runtime (the default engine) vs `--engine torch` on copies of the same dataset, the CLI in
   process, after a warm-up of each on a one-episode dataset (exporting the encoder graph once is not counted);
   `--embed-rounds` interleaved rounds, medians.
   Target: ONNX Runtime >= 3x torch ("today").
Each part records the 1-minute load average before and after it; the machine is a shared 2-core CPU. Usage:
    PYTHONPATH=.:service .venv/bin/python bench/cpu_targets.py [--episodes 8] [--length 300] [--threads 1 2]
        [--videos 3] [--upload-threads 1 2] [--embed-rounds 2] [--only encoder rabc upload embed] [--no-profile]
Writes bench/results/cpu_targets.json (`--out NAME` for another name).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata as metadata
import os
import platform
import shutil
import statistics
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from fractions import Fraction
from pathlib import Path
from typing import Any, cast

import av
import httpx
import numpy as np
import pyarrow.parquet as pq
from _gateway import ROOT, GatewayProcess, free_port, latency_ms, write_results
from lerobot_speed import cpu_seconds, timed_stages
from rich.console import Console
from rich.table import Table
from typer.testing import CliRunner

from sarm.cli import app
from sarm.data.annotations import EpisodeAnnotation, Subtask
from sarm.data.episode import EpisodeData
from sarm.data.lerobot import LeRobotDataset, LeRobotWriter
from sarm.manifest import read_manifest
from sarm.scoring.backends import LocalBackend
from sarm.scoring.repository import repository_for
from sarm_gateway.http.video import VideoLimits, VideoReader
from sarm_gateway.settings import DEFAULT_MODEL_REPO

CHECKPOINT = ROOT / "model_repo" / "default" / "checkpoint"
INSTRUCTION = "Pick up the puck and place it at the goal."  # one of the default model's tasks
STAGES = ("reach", "grasp", "lift", "place")
CAMERA = "observation.images.top"
TARGET_RABC_FPS = 50.0
TARGET_UPLOAD_S = 5.0
TARGET_EMBED_SPEEDUP = 3.0
UPLOAD_TIMEOUT_S = 600.0
PARTS = ("encoder", "rabc", "upload", "embed")
console = Console(width=200)
os.environ.setdefault("SVT_LOG", "1")  # libsvtav1: errors only, not its configuration banner for every video


# ---- inputs: moving, textured frames --------------------------------------------------------------------------------


class Scene:
    """A textured background that pans, with a bright block moving across it and mild sensor noise: content a
    codec has to work for (no static or flat frames), reproducible from `seed`."""

    def __init__(self, height: int, width: int, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        y, x = np.mgrid[0:height, 0:width].astype(np.float32)
        phase = self.rng.uniform(0, 2 * np.pi, 3)
        period = self.rng.uniform(0.02, 0.08, 3) * 2 * np.pi / 8
        base = np.stack([np.sin(x * period[c] + phase[c]) * np.cos(y * period[(c + 1) % 3]) for c in range(3)], -1)
        texture = self.rng.integers(0, 40, (height, width, 3))
        self.background = np.clip(110 + 70 * base + texture, 0, 255).astype(np.uint8)
        self.height, self.width = height, width
        self.colour = self.rng.integers(150, 256, 3).astype(np.uint8)

    def frame(self, t: int, length: int) -> np.ndarray:
        image = np.roll(self.background, shift=(t // 2, t), axis=(0, 1))
        side = max(self.height // 5, 4)
        top = int((self.height - side) * (0.5 + 0.4 * np.sin(t / 15)))
        left = int((self.width - side) * t / max(length - 1, 1))
        image[top : top + side, left : left + side] = self.colour
        noise = self.rng.integers(-3, 4, image.shape, dtype=np.int16)
        return np.clip(image.astype(np.int16) + noise, 0, 255).astype(np.uint8)


def episode(length: int, seed: int, size: int) -> EpisodeData:
    scene = Scene(size, size, seed)
    frames = np.stack([scene.frame(t, length) for t in range(length)])
    bounds = np.linspace(0, length, len(STAGES) + 1).round().astype(int)
    subtasks = tuple(Subtask(name, int(s), int(e)) for name, s, e in zip(STAGES, bounds[:-1], bounds[1:], strict=True))
    rng = np.random.default_rng(seed)
    return EpisodeData(
        task=INSTRUCTION,
        frames={CAMERA: frames},
        state=rng.normal(size=(length, 4)).astype(np.float32),
        action=rng.normal(size=(length, 4)).astype(np.float32),
        annotations={"sparse": EpisodeAnnotation(subtasks)},
    )


def write_dataset(root: Path, episodes: int, length: int, fps: int, size: int) -> dict[str, Any]:
    """An AV1 dataset of `episodes` x `length` frames at `size` px written by our LeRobotWriter; seconds taken."""
    start = time.perf_counter()
    with LeRobotWriter(root, fps=fps, codec="av1") as writer:
        for seed in range(episodes):
            writer.add_episode(episode(length, seed, size))
    videos = sorted(root.rglob("*.mp4"))
    with av.open(str(videos[0])) as container:
        decoder = container.streams.video[0].codec_context.name
    return {
        "episodes": episodes,
        "frames": episodes * length,
        "fps": fps,
        "size": f"{size}x{size}",
        "codec": "av1 (LeRobotWriter codec='av1': encoded by libsvtav1, crf 18, keyframe every second)",
        "decoder": decoder,
        "video_bytes": sum(v.stat().st_size for v in videos),
        "write_seconds": time.perf_counter() - start,
    }


def write_video(path: Path, seconds: int, fps: int, width: int, height: int, seed: int) -> dict[str, Any]:
    """A `seconds` long H.264 mp4 (libx264, yuv420p, PyAV) of a Scene at `seed`."""
    start = time.perf_counter()
    scene, length = Scene(height, width, seed), seconds * fps
    with av.open(str(path), mode="w") as container:
        stream = cast(av.VideoStream, container.add_stream("libx264", rate=fps))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.time_base = Fraction(1, fps)
        stream.options = {"crf": "23", "preset": "veryfast"}
        for t in range(length):
            frame = av.VideoFrame.from_ndarray(scene.frame(t, length), format="rgb24")
            frame.pts = t
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return {"frames": length, "bytes": path.stat().st_size, "write_seconds": time.perf_counter() - start}


# ---- helpers ---------------------------------------------------------------------------------------------------------


def invoke(args: list[str]) -> str:
    result = CliRunner().invoke(app, args)
    if result.exit_code != 0:
        raise RuntimeError(f"sarm {args[0]} failed ({result.exit_code}): {result.output}\n{result.exception!r}")
    return result.output


@contextmanager
def measured(row: dict[str, Any]) -> Iterator[None]:
    """Wall and CPU seconds of the block and the load average around it, into `row`."""
    load, start, cpu = os.getloadavg(), time.perf_counter(), cpu_seconds()
    yield
    row["seconds"] = time.perf_counter() - start
    row["cpu_seconds"] = cpu_seconds() - cpu
    row["loadavg_before"], row["loadavg_after"] = list(load), list(os.getloadavg())


def versions() -> dict[str, Any]:
    packages = ("torch", "onnxruntime", "av", "numpy", "httpx", "sarm")
    found = {}
    for name in packages:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "not installed"
    libs = {name: ".".join(map(str, v)) for name, v in av.library_versions.items()}
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    return {"python": platform.python_version(), **found, "ffmpeg_libs": libs, "git_commit": commit}


def load_text(row: dict[str, Any]) -> str:
    return f"{row['loadavg_before'][0]:.1f}→{row['loadavg_after'][0]:.1f}"


def verdict(ok: bool) -> str:
    return "[green]pass" if ok else "[red]FAIL"


# ---- the ceiling: the default model's exported encoder alone ------------------------------------------------------


def encoder_ceiling(
    threads: list[int], batches: tuple[int, ...] = (1, 8, 32), images: int = 256
) -> list[dict[str, Any]]:
    """Images/s of the default repository's frame encoder graph through the gateway's LocalBackend (ONNX Runtime),
    at each thread count and batch size, on distinct random 128 px frames: what any path that encodes every frame
    can reach at most here."""
    manifest = read_manifest(DEFAULT_MODEL_REPO)
    height, width = manifest.image_height, manifest.image_width
    frames = np.random.default_rng(0).integers(0, 256, (images, height, width, 3), dtype=np.uint8)
    rows = []
    for n in threads:
        backend = LocalBackend(DEFAULT_MODEL_REPO, manifest, intra_op_threads=n, workers=1)

        async def run(batch: int, backend: LocalBackend = backend) -> list[float]:
            await backend.encode(frames[:batch])  # first call: ONNX Runtime allocates
            times = []
            for i in range(0, images, batch):
                start = time.perf_counter()
                await backend.encode(frames[i : i + batch])
                times.append(time.perf_counter() - start)
            return times

        for batch in batches:
            row: dict[str, Any] = {"threads": n, "batch": batch}
            with measured(row):
                times = asyncio.run(run(batch))
            row.update(images_per_s=images / sum(times), ms_per_image=1e3 * sum(times) / images)
            rows.append(row)
        asyncio.run(backend.close())
    return rows


# ---- 1: sarm rabc end to end -----------------------------------------------------------------------------------------


def decode_only(dataset: Path) -> dict[str, Any]:
    ds = LeRobotDataset(dataset)
    row: dict[str, Any] = {}
    per_episode = []
    with measured(row):
        frames = 0
        for meta in ds.episodes:
            start = time.perf_counter()
            frames += len(ds.frames(meta.index))
            per_episode.append(time.perf_counter() - start)
    row.update(frames=frames, frames_per_s=frames / row["seconds"], episode_latency=latency_ms(per_episode))
    return row


def rabc_run(dataset: Path, out: Path, threads: int) -> dict[str, Any]:
    row: dict[str, Any] = {"threads": threads, "stride": 1}
    args = ["rabc", str(dataset), "--checkpoint", str(CHECKPOINT), "--chunk-size", "10", "--stride", "1"]
    args += ["--threads", str(threads), "--device", "cpu", "--out", str(out)]
    with timed_stages() as timers, measured(row):
        invoke(args)
    progress = pq.read_table(out / "sarm_progress.parquet").column("progress_sparse").to_numpy()
    if not np.all(np.isfinite(progress)):
        raise RuntimeError("sarm rabc wrote non-finite progress")
    st = timers.stages
    row.update(
        frames=len(progress),
        frames_per_s=len(progress) / row["seconds"],
        cpu_share=row["cpu_seconds"] / row["seconds"],
        # Seconds inside each real call (wall, summed over calls; calls on other threads may overlap).
        decode_seconds=st["decode"].seconds,
        decoded_frames=st["decode"].items,
        encode_seconds=st["clip"].seconds,
        encoded_frames=st["clip"].items,
        heads_seconds=st["heads"].seconds,
        heads_windows=st["heads"].items,
        other_seconds=row["seconds"] - st["decode"].seconds - st["clip"].seconds - st["heads"].seconds,
    )
    return row


def bench_rabc(dataset: Path, work: Path, threads: list[int]) -> dict[str, Any]:
    start = time.perf_counter()
    repository_for(CHECKPOINT)  # exported once per checkpoint into the cache: what a first run adds, not timed
    warm = time.perf_counter() - start
    decode = decode_only(dataset)
    runs = [rabc_run(dataset, work / f"rabc_t{t}", t) for t in threads]
    return {"repository_ready_seconds": warm, "decode_only": decode, "runs": runs}


# ---- 2: video upload -------------------------------------------------------------------------------------------------


UPLOAD_PARTS: list[tuple[str, str]] = [  # (a function the stack contains, the part); first match wins
    ("Session.run", "ONNX Runtime (encoder and heads)"),
    ("to_rgb", "decoding: YUV->RGB and resize (libswscale)"),
    ("VideoReader", "decoding (PyAV)"),
    ("receive_upload", "receiving the upload"),
    ("render", "rendering the answer"),
    ("Engine.encode", "engine: frame hashing, cache, batching"),
    ("score_curve", "engine: windows and heads batching"),
    ("EpollSelector.select", "event loop: polling for I/O"),
    ("", "other"),
]


def upload_profile(collapsed: Path) -> list[dict[str, Any]]:
    """py-spy's raw collapsed stacks sorted into UPLOAD_PARTS: active thread-seconds per part (100 Hz)."""
    counts: Counter[str] = Counter()
    for line in collapsed.read_text().splitlines():
        stack, _, samples = line.rpartition(" ")
        counts[next(part for frame, part in UPLOAD_PARTS if frame in stack)] += int(samples)
    total = sum(counts.values()) or 1
    return [
        {"part": part, "active_s": counts[part] / 100, "share": counts[part] / total}
        for _, part in UPLOAD_PARTS
        if counts[part]
    ]


def post_video(client: httpx.Client, url: str, video: Path) -> dict[str, Any]:
    start = time.perf_counter()
    with video.open("rb") as handle:
        response = client.post(
            url, files={"video": (video.name, handle, "video/mp4")}, data={"instruction": INSTRUCTION}
        )
    seconds = time.perf_counter() - start
    if response.status_code != 200:
        raise RuntimeError(f"upload of {video.name}: HTTP {response.status_code} {response.text[:500]}")
    body = response.json()
    return {"video": video.name, "seconds": seconds, "frames": len(body["frames"])}


def decode_upload_only(video: Path, size: tuple[int, int]) -> dict[str, Any]:
    """The gateway's VideoReader decoding and resizing a whole video, in this process."""
    row: dict[str, Any] = {}
    limits = VideoLimits(max_seconds=1e9, max_frames=10**9, max_pixels=10**9)
    with measured(row):
        reader = VideoReader(video, size[0], size[1], limits)
        try:
            while len(reader.read(64)):
                pass
        finally:
            reader.close()
    row.update(frames=reader.decoded, frames_per_s=reader.decoded / row["seconds"])
    return row


def bench_upload(
    work: Path, count: int, seconds: int, threads: list[int], profile: bool, py_spy: str
) -> dict[str, Any]:
    """One gateway per ONNX Runtime thread count, all up at once; each distinct video goes to each gateway in turn
    (interleaved), so every upload is the first of that video to that gateway (caches are per process)."""
    videos, made = [], []
    with console.status(f"writing {count + 1 + profile} H.264 videos ({seconds} s, 640x480, 30 fps)"):
        for seed in range(count + 1 + profile):  # seed 0: a 1 s warm-up video
            path = work / f"video{seed}.mp4"
            made.append({"name": path.name, **write_video(path, 1 if seed == 0 else seconds, 30, 640, 480, seed)})
            videos.append(path)
    warmup, distinct, extra = videos[0], videos[1 : count + 1], videos[count + 1 :]
    result: dict[str, Any] = {"videos": made, "decode_only": decode_upload_only(distinct[0], (128, 128))}
    envs = {n: {"SARM_HTTP_PORT": str(free_port()), "SARM_INTRA_OP_THREADS": str(n)} for n in threads}
    urls = {n: f"http://127.0.0.1:{env['SARM_HTTP_PORT']}/v1/videos:score" for n, env in envs.items()}
    configs: dict[int, dict[str, Any]] = {
        n: {"gateway_env": env, "first_time": [], "warm": []} for n, env in envs.items()
    }
    with ExitStack() as stack:
        client = stack.enter_context(httpx.Client(timeout=UPLOAD_TIMEOUT_S))
        for n, env in envs.items():
            start = time.perf_counter()
            stack.enter_context(GatewayProcess(DEFAULT_MODEL_REPO, env))
            configs[n]["gateway_start_seconds"] = time.perf_counter() - start
            configs[n]["warmup"] = post_video(client, urls[n], warmup)  # first ONNX Runtime runs, the instruction
        load = os.getloadavg()
        for video in distinct:
            for n in threads:
                configs[n]["first_time"].append(post_video(client, urls[n], video))
        for _ in range(2):
            for n in threads:
                configs[n]["warm"].append(post_video(client, urls[n], distinct[0]))
        result["loadavg_before"], result["loadavg_after"] = list(load), list(os.getloadavg())
    result["gateways"] = [{"threads": n, **configs[n]} for n in threads]
    if profile and extra:
        collapsed = work / "upload.pyspy"
        with (
            GatewayProcess(DEFAULT_MODEL_REPO, envs[threads[0]], profile=collapsed, py_spy=py_spy),
            httpx.Client(timeout=UPLOAD_TIMEOUT_S) as client,
        ):
            post_video(client, urls[threads[0]], warmup)
            result["profiled"] = {"threads": threads[0], **post_video(client, urls[threads[0]], extra[0])}
        result["profile"] = upload_profile(collapsed)
    return result


# ---- 3: sarm embed, ONNX Runtime vs torch ----------------------------------------------------------------------------


def embed_run(dataset: Path, engine: str) -> dict[str, Any]:
    row: dict[str, Any] = {"engine": engine}
    with timed_stages() as timers, measured(row):
        invoke(["embed", str(dataset), "--engine", engine, "--device", "cpu"])
    frames = sum(meta.length for meta in LeRobotDataset(dataset).episodes)
    row.update(
        frames=frames,
        frames_per_s=frames / row["seconds"],
        cpu_share=row["cpu_seconds"] / row["seconds"],
        decode_seconds=timers.stages["decode"].seconds,
    )
    return row


def bench_embed(dataset: Path, tiny: Path, work: Path, rounds: int) -> dict[str, Any]:
    engines = ("torch", "onnxruntime")
    warmup = {}
    for engine in engines:  # exports the encoder graph once (ONNX Runtime) and loads everything once
        copy = shutil.copytree(tiny, work / f"embed_warm_{engine}")
        start = time.perf_counter()
        invoke(["embed", str(copy), "--engine", engine, "--device", "cpu"])
        warmup[engine] = time.perf_counter() - start
    runs: list[dict[str, Any]] = []
    for r in range(rounds):  # interleaved, so machine noise hits both alike
        for engine in engines:
            runs.append({"round": r, **embed_run(shutil.copytree(dataset, work / f"embed_{engine}_{r}"), engine)})
    median = {e: statistics.median(x["frames_per_s"] for x in runs if x["engine"] == e) for e in engines}
    return {
        "warmup_seconds": warmup,
        "runs": runs,
        "frames_per_s": median,
        "speedup": median["onnxruntime"] / median["torch"],
        "torch_threads": _torch_threads(),
        "onnxruntime_threads": "0 (the CLI default: one per core)",
    }


def _torch_threads() -> int:
    import torch

    return int(torch.get_num_threads())


# ---- output ----------------------------------------------------------------------------------------------------------


def summary_rows(results: dict[str, Any]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    if "rabc" in results:
        rabc = results["rabc"]
        rows.append(
            {
                "target": "decoding alone (LeRobotDataset.frames, AV1 128 px)",
                "measured": f"{rabc['decode_only']['frames_per_s']:.0f} frames/s",
                "p50/p99": "{p50_ms:.0f} / {p99_ms:.0f} ms per episode".format(
                    **rabc["decode_only"]["episode_latency"]
                ),
                "ok": None,
                "load": load_text(rabc["decode_only"]),
            }
        )
        for run in rabc["runs"]:
            rows.append(
                {
                    "target": f"sarm rabc, stride 1, --threads {run['threads']}: >= {TARGET_RABC_FPS:g} frames/s",
                    "measured": f"{run['frames_per_s']:.1f} frames/s ({run['frames']} in {run['seconds']:.1f} s)",
                    "p50/p99": "-",
                    "ok": run["frames_per_s"] >= TARGET_RABC_FPS,
                    "load": load_text(run),
                }
            )
    if "upload" in results:
        up = results["upload"]
        seconds = up["videos"][-1]["frames"] // 30
        for gateway in up["gateways"]:
            first = latency_ms([r["seconds"] for r in gateway["first_time"]])
            warm = latency_ms([r["seconds"] for r in gateway["warm"]])
            where = f"gateway SARM_INTRA_OP_THREADS={gateway['threads']}"
            rows.append(
                {
                    "target": f"{seconds} s 640x480 upload, first time, {where}: <= {TARGET_UPLOAD_S:g} s",
                    "measured": f"{first['p50_ms'] / 1e3:.1f} s ({len(gateway['first_time'])} distinct videos)",
                    "p50/p99": f"{first['p50_ms'] / 1e3:.1f} / {first['p99_ms'] / 1e3:.1f} s",
                    "ok": first["p50_ms"] / 1e3 <= TARGET_UPLOAD_S,
                    "load": load_text(up),
                }
            )
            rows.append(
                {
                    "target": f"the same upload again (warm caches), {where}",
                    "measured": f"{warm['p50_ms'] / 1e3:.2f} s",
                    "p50/p99": f"{warm['p50_ms'] / 1e3:.2f} / {warm['p99_ms'] / 1e3:.2f} s",
                    "ok": None,
                    "load": load_text(up),
                }
            )
        decode = up["decode_only"]
        rows.append(
            {
                "target": "its decoding + resizing to 128 px alone (VideoReader)",
                "measured": f"{decode['seconds']:.1f} s ({decode['frames_per_s']:.0f} frames/s)",
                "p50/p99": "-",
                "ok": None,
                "load": load_text(decode),
            }
        )
    for row in results.get("encoder", []):
        rows.append(
            {
                "target": f"the encoder alone (ONNX Runtime), {row['threads']} thread(s), batch {row['batch']}",
                "measured": f"{row['images_per_s']:.0f} images/s ({row['ms_per_image']:.1f} ms each)",
                "p50/p99": "-",
                "ok": None,
                "load": load_text(row),
            }
        )
    if "embed" in results:
        em = results["embed"]
        fps = em["frames_per_s"]
        rows.append(
            {
                "target": f"sarm embed: ONNX Runtime >= {TARGET_EMBED_SPEEDUP:g}x torch",
                "measured": f"{em['speedup']:.2f}x ({fps['onnxruntime']:.1f} vs {fps['torch']:.1f} frames/s)",
                "p50/p99": "-",
                "ok": em["speedup"] >= TARGET_EMBED_SPEEDUP,
                "load": "; ".join(f"{r['engine']} {load_text(r)}" for r in em["runs"]),
            }
        )
    return rows


def breakdown(results: dict[str, Any]) -> dict[str, Any]:
    """Where the time goes, in a few numbers per part: the stage seconds, and what the encoder alone allows."""
    best: dict[int, float] = {}  # threads -> the encoder's best images/s over batch sizes
    for row in results.get("encoder", []):
        best[row["threads"]] = max(best.get(row["threads"], 0.0), row["images_per_s"])
    out: dict[str, Any] = {"encoder_alone_best_images_per_s": best}
    if "rabc" in results:
        keys = ("decode_seconds", "encode_seconds", "heads_seconds", "other_seconds")
        out["rabc"] = [
            {"threads": r["threads"], "seconds": r["seconds"], **{k: r[k] for k in keys}}
            for r in results["rabc"]["runs"]
        ]
    if "upload" in results:
        up = results["upload"]
        frames = up["videos"][-1]["frames"]
        out["upload"] = {
            "first_time_p50_s": {
                g["threads"]: statistics.median(x["seconds"] for x in g["first_time"]) for g in up["gateways"]
            },
            "decode_and_resize_alone_s": up["decode_only"]["seconds"],
            "encoder_alone_floor_s": {n: frames / v for n, v in best.items()},
            "gateway_active_s_by_part": {p["part"]: p["active_s"] for p in up.get("profile", [])},
        }
    if "embed" in results:
        out["embed"] = [
            {"engine": r["engine"], "seconds": r["seconds"], "decode_seconds": r["decode_seconds"]}
            for r in results["embed"]["runs"]
        ]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--episodes", type=int, default=8, help="episodes in the AV1 dataset")
    parser.add_argument("--length", type=int, default=300, help="frames per episode (30 fps)")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="sarm rabc --threads values")
    parser.add_argument("--videos", type=int, default=3, help="distinct 30 s videos uploaded the first time")
    parser.add_argument("--video-seconds", type=int, default=30)
    parser.add_argument(
        "--upload-threads", type=int, nargs="+", default=[1, 2], help="SARM_INTRA_OP_THREADS of each gateway"
    )
    parser.add_argument("--embed-rounds", type=int, default=2)
    parser.add_argument("--only", nargs="+", choices=PARTS, default=list(PARTS))
    parser.add_argument(
        "--profile",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="one more upload under py-spy: where the gateway's time goes",
    )
    parser.add_argument("--py-spy", default=str(ROOT / ".venv" / "bin" / "py-spy"))
    parser.add_argument("--out", help="results file name under bench/results/ (default: cpu_targets)")
    args = parser.parse_args()
    results: dict[str, Any] = {"versions": versions(), "loadavg_start": list(os.getloadavg())}
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="cpu_targets_") as tmp:
        work = Path(tmp)
        if {"rabc", "embed"} & set(args.only):
            with console.status(f"writing the AV1 dataset ({args.episodes} x {args.length} frames, 128 px)"):
                results["dataset"] = write_dataset(work / "dataset", args.episodes, args.length, 30, 128)
                write_dataset(work / "tiny", 1, 30, 30, 128)
            console.print(f"dataset: {results['dataset']}")
        steps: dict[str, Callable[[], Any]] = {
            "rabc": lambda: bench_rabc(work / "dataset", work, args.threads),
            "encoder": lambda: encoder_ceiling(sorted({*args.threads, *args.upload_threads})),
            "upload": lambda: bench_upload(
                work, args.videos, args.video_seconds, args.upload_threads, args.profile, args.py_spy
            ),
            "embed": lambda: bench_embed(work / "dataset", work / "tiny", work, args.embed_rounds),
        }
        for name in PARTS:
            if name in args.only:
                with console.status(f"measuring {name}"):
                    results[name] = steps[name]()
                console.print(f"{name} done at {time.perf_counter() - start:.0f} s")
    results["wall_seconds"] = time.perf_counter() - start
    results["loadavg_end"] = list(os.getloadavg())
    results["breakdown"] = breakdown(results)
    rows = summary_rows(results)
    results["summary"] = [{**r, "pass": r.pop("ok")} for r in rows]
    table = Table(title="issue #13 CPU targets (shared 2-core machine; load average 1 min, before→after)")
    for column in ("target", "measured", "p50 / p99", "pass/fail", "load 1m"):
        table.add_column(column)
    for r in results["summary"]:
        ok = "-" if r["pass"] is None else verdict(r["pass"])
        table.add_row(r["target"], r["measured"], r["p50/p99"], ok, r["load"])
    console.print(table)
    write_results("cpu_targets", args, results)


if __name__ == "__main__":
    main()
