"""A frame encoder run in ONNX Runtime: the exported graph (float or INT8) behind the `encode_frames` interface.

The exported graph fixes the image height and width (its in-graph resize is specialised to them), so the
encoder keeps one session per camera resolution and asks a `GraphSource` for the graph of each: a fresh export
cached on disk (`float_graphs`), its INT8 version calibrated on the dataset at hand (`int8_graphs`), or the
graph of an exported model repository (`repo_graph`). Its identity (`identity()`) is the torch encoder's id,
version and dim, plus `quantization` for INT8, which the embedding store records.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from sarm.data.lerobot import LeRobotDataset
from sarm.encoders.base import FrameEncoder
from sarm.encoders.onnx_export import INPUT_NAME, export_frame_encoder
from sarm.export.quantize import DEFAULT_CALIBRATION_FRAMES, MODE, calibration_frames, quantize_frame_encoder
from sarm.export.session import cpu_session_options

GraphSource = Callable[[int, int], Path]  # (height, width) -> ONNX graph for images of that size
DEFAULT_CACHE = Path.home() / ".cache" / "sarm" / "onnx"


def cpu_session(
    path: Path, threads: int = 0, providers: Sequence[str] = ("CPUExecutionProvider",)
) -> ort.InferenceSession:
    """A CPU session (threads 0 = onnxruntime's default: one per physical core); `providers` from
    sarm.device.onnx_providers put it on CUDA (`sarm embed --device`)."""
    return ort.InferenceSession(str(path), cpu_session_options(threads), providers=list(providers))


class OnnxFrameEncoder:
    """(N, H, W, 3) uint8 -> (N, dim) float32 through ONNX Runtime, with a FrameEncoder's identity."""

    def __init__(
        self,
        encoder_id: str,
        version: str,
        dim: int,
        graphs: GraphSource,
        quantization: dict[str, Any] | None = None,
        threads: int = 0,
        providers: Sequence[str] = ("CPUExecutionProvider",),
        prepare: Callable[[np.ndarray], np.ndarray] | None = None,
    ) -> None:
        """`prepare`: what the graph takes for decoded frames (FrameEncoder.prepare: CLIP's host-side crop)."""
        self.encoder_id, self.version, self.dim = encoder_id, version, dim
        self._prepare = prepare
        self.quantization = quantization
        self._graphs, self._threads, self._providers = graphs, threads, tuple(providers)
        self._sessions: dict[tuple[int, int], ort.InferenceSession] = {}

    def identity(self) -> dict[str, Any]:
        """What the embedding store records: id, version, dim, and the quantization when there is one."""
        ident: dict[str, Any] = {"id": self.encoder_id, "version": self.version, "dim": self.dim}
        if self.quantization is not None:
            ident["quantization"] = self.quantization
        return ident

    def _session(self, height: int, width: int) -> ort.InferenceSession:
        if (height, width) not in self._sessions:
            self._sessions[height, width] = cpu_session(self._graphs(height, width), self._threads, self._providers)
        return self._sessions[height, width]

    def encode_frames(self, frames: np.ndarray, batch_size: int = 8) -> np.ndarray:
        if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
            raise ValueError(f"expected (N, H, W, 3) uint8 frames, got {frames.shape} {frames.dtype}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        out = np.empty((len(frames), self.dim), dtype=np.float32)
        for start in range(0, len(frames), batch_size):
            chunk = frames[start : start + batch_size]
            chunk = np.ascontiguousarray(chunk if self._prepare is None else self._prepare(chunk))
            run = self._session(int(chunk.shape[1]), int(chunk.shape[2]))
            out[start : start + len(chunk)] = run.run(None, {INPUT_NAME: chunk})[0]
        return out


def _atomic(path: Path, write: Callable[[Path], object]) -> Path:
    """Write `path` through a temporary file beside it, so a stopped run never leaves half a graph."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
        partial = Path(tmp) / path.name
        write(partial)
        os.replace(partial, path)
    return path


def float_graphs(encoder: FrameEncoder, cache: Path = DEFAULT_CACHE) -> GraphSource:
    """Export `encoder` once per resolution into `cache/<id>@<version>/<H>x<W>.onnx` (reused afterwards)."""

    def graph(height: int, width: int) -> Path:
        path = cache / f"{encoder.encoder_id}@{encoder.version}" / f"{height}x{width}.onnx"
        if not path.is_file():
            _atomic(path, lambda p: export_frame_encoder(encoder, p, height=height, width=width))
        return path

    return graph


def int8_graphs(
    encoder: FrameEncoder, ds: LeRobotDataset, cache: Path = DEFAULT_CACHE, frames: int = DEFAULT_CALIBRATION_FRAMES
) -> GraphSource:
    """INT8 graphs calibrated on `ds`'s own frames of each resolution; cached by the calibration frames' digest,
    so a resumed `sarm embed --quantize int8` reuses the graph it started with."""
    floats = float_graphs(encoder, cache)

    def graph(height: int, width: int) -> Path:
        calibration = calibration_frames([ds.root], frames, image_size=(height, width))
        digest = calibration.describe()["frames_sha256"]
        path = cache / f"{encoder.encoder_id}@{encoder.version}" / f"{height}x{width}.int8-{digest}.onnx"
        if not path.is_file():
            _atomic(path, lambda p: quantize_frame_encoder(floats(height, width), p, calibration))
        return path

    return graph


def int8_identity(calibrated_on: str) -> dict[str, Any]:
    return {"mode": MODE, "calibrated_on": calibrated_on}


def repo_graph(repo: Path) -> tuple[GraphSource, dict[str, Any]]:
    """The frame encoder graph of an exported model repository, and its identity (from the manifest)."""
    from sarm.export.model_repo import onnx_path, read_manifest

    manifest = read_manifest(repo)
    path = onnx_path(repo, manifest, "encoder")
    size = manifest.image_size

    def graph(height: int, width: int) -> Path:
        if (height, width) != size:
            raise ValueError(
                f"{repo}'s frame encoder takes {size[0]}x{size[1]} images, the dataset has "
                f"{height}x{width}: export a repository at this resolution (sarm export --image-size)"
            )
        return path

    encoder = manifest.frame_encoder
    identity: dict[str, Any] = {"id": encoder.id, "version": encoder.version, "dim": encoder.dim}
    if "quantization" in encoder.extra:
        record = encoder.extra["quantization"]
        identity["quantization"] = {
            "mode": record["mode"],
            "calibrated_on": str(record["calibration"]["datasets"]),
            "onnx_sha256": hashlib.sha256(path.read_bytes()).hexdigest()[:12],
        }
    return graph, identity
