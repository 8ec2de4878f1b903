"""INT8 frame encoder: ONNX Runtime static quantization (QDQ, per-channel weights) calibrated on real frames.

The exported encoder takes uint8 camera images and resizes/normalises inside the graph. Only the conv body is
quantized (its Conv, Clip and residual Add nodes, from the first Conv on): the preprocessing (Cast, Resize,
Sub/Div) and the final global average pool stay float, so the input (uint8 (B, H, W, 3)) and output (float32
(B, D)) contracts are the float graph's. Clip (ReLU6) is quantized with its Conv so that a Conv's output is
quantized over the post-activation range, not the much wider pre-activation one.

Weights are int8, symmetric, per output channel, with `reduce_range` (7 bits); activations uint8. Measured
on EfficientNet-Lite0 at 128 px on our AVX2 CPUs (no VNNI), embedding cosine to the float graph and speed:
- int8 weights, full range: cosine 0.82. MLAS's u8s8 kernels sum pairs of products in 16 bits without VNNI,
  which saturates with 8-bit weights.
- int8 weights with `reduce_range`, as here: cosine 0.98-0.985, about 1.4x the float graph's images/s.
- uint8 weights (U8U8): cosine 0.996, but about 5x slower than float. MLAS has no fast U8U8 per-channel conv
  here, so it defeats the purpose.
The stem (first) and head (last) convs stay float: they cost little and quantizing them costs the most accuracy.

Calibration frames are sampled evenly from a LeRobot dataset's episodes and cameras (decoded with
`LeRobotDataset.frames`). Their resolution must be the exported encoder's, since the graph fixes H and W.
"""

from __future__ import annotations

import hashlib
import logging
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_static,
)
from onnxruntime.quantization.shape_inference import quant_pre_process

from sarm.data.lerobot import LeRobotDataset
from sarm.encoders.onnx_export import INPUT_NAME

MODE = "int8-qdq-per-channel"
QUANTIZED_OPS = ("Conv", "Clip", "Add")
DEFAULT_CALIBRATION_FRAMES = 256
CALIBRATION_BATCH = 16


class CalibrationError(ValueError):
    """The calibration data cannot calibrate this encoder (no frames, wrong resolution, not a dataset)."""


@dataclass(frozen=True)
class Calibration:
    """The frames a quantized encoder was calibrated on, and where they came from (goes in manifests)."""

    frames: np.ndarray  # (N, H, W, 3) uint8
    sources: tuple[str, ...]
    episodes: int

    def describe(self) -> dict[str, Any]:
        digest = hashlib.sha256(np.ascontiguousarray(self.frames).tobytes()).hexdigest()[:12]
        return {
            "datasets": list(self.sources),
            "frames": len(self.frames),
            "episodes": self.episodes,
            "frames_sha256": digest,
            "method": "minmax",
        }


def calibration_frames(
    datasets: Sequence[Path], count: int = DEFAULT_CALIBRATION_FRAMES, image_size: tuple[int, int] | None = None
) -> Calibration:
    """About `count` frames spread evenly over every episode and camera of `datasets` (deterministic).

    `image_size` (H, W), when given, is checked: the exported encoder only takes images of its own size.
    """
    if not datasets:
        raise CalibrationError("no calibration dataset given: pass --calibration DATASET")
    if count < 1:
        raise CalibrationError(f"calibration needs at least 1 frame, got {count}")
    sources = [LeRobotDataset(path) for path in datasets]
    streams = [(ds, meta.index, camera) for ds in sources for meta in ds.episodes for camera in ds.camera_keys]
    if not streams:
        raise CalibrationError(f"{', '.join(map(str, datasets))} hold no episodes to calibrate on")
    per_stream = max(1, -(-count // len(streams)))
    chunks = []
    for ds, episode, camera in streams:
        length = ds.episode(episode).length
        picks = np.unique(np.linspace(0, length - 1, min(per_stream, length)).round().astype(np.int64))
        frames = ds.frames(episode, camera, picks)
        if image_size is not None and frames.shape[1:3] != tuple(image_size):
            raise CalibrationError(
                f"{ds.root} camera {camera} has {frames.shape[1]}x{frames.shape[2]} frames but the encoder takes "
                f"{image_size[0]}x{image_size[1]}: calibrate on a dataset recorded at the exported resolution"
            )
        chunks.append(frames)
    frames = np.concatenate(chunks)
    if len(frames) > count:  # even subsample, so every episode stays represented
        frames = frames[np.linspace(0, len(frames) - 1, count).round().astype(np.int64)]
    return Calibration(frames, tuple(str(Path(p)) for p in datasets), sum(len(ds.episodes) for ds in sources))


class _FrameReader(CalibrationDataReader):
    def __init__(self, frames: np.ndarray, batch: int = CALIBRATION_BATCH) -> None:
        self._batches: Iterator[np.ndarray] = (frames[i : i + batch] for i in range(0, len(frames), batch))

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self._batches, None)
        return None if batch is None else {INPUT_NAME: batch}


def _body_nodes(model: onnx.ModelProto) -> list[str]:
    """Names of the nodes to quantize: the conv body (QUANTIZED_OPS after the first Conv), less the last Conv."""
    nodes = list(model.graph.node)  # topologically sorted by the ONNX spec
    convs = [i for i, node in enumerate(nodes) if node.op_type == "Conv"]
    if len(convs) < 3:
        return []
    first, last = convs[0], convs[-1]
    return [n.name for i, n in enumerate(nodes) if first < i and i != last and n.op_type in QUANTIZED_OPS]


def quantize_frame_encoder(float_onnx: Path, out: Path, calibration: Calibration) -> Path:
    """Write the INT8 (QDQ, per-channel) version of the float encoder graph `float_onnx` to `out`."""
    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        # Shape inference and ORT's basic fusions (BatchNorm into Conv) first, as ONNX Runtime recommends:
        # calibration then sees the activations of the graph that actually runs.
        quant_pre_process(str(float_onnx), str(prepared), skip_symbolic_shape=True)
        model = onnx.load(str(prepared))
        nodes = _body_nodes(model)
        if not nodes:
            raise ValueError(f"{float_onnx} has no Conv to quantize: is it a frame encoder?")
        # ORT warns once per Conv whose int32 bias overflows its scale (dead channels of folded BatchNorm) and
        # clamps it; the accuracy that results is what tests and bench/int8_accuracy.py measure.
        root = logging.getLogger()
        level = root.level
        root.setLevel(logging.ERROR)
        try:
            quantize_static(
                str(prepared),
                str(out),
                _FrameReader(calibration.frames),
                quant_format=QuantFormat.QDQ,
                op_types_to_quantize=list(QUANTIZED_OPS),
                nodes_to_quantize=nodes,
                per_channel=True,
                reduce_range=True,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                calibrate_method=CalibrationMethod.MinMax,
            )
        finally:
            root.setLevel(level)
    return out


def quantization_record(calibration: Calibration, float_onnx_sha256: str) -> dict[str, Any]:
    """What a manifest says about an INT8 encoder: mode, weights/activations, calibration provenance."""
    return {
        "mode": MODE,
        "weights": "int8 symmetric per-channel, reduce_range (7-bit)",
        "activations": "uint8 asymmetric per-tensor",
        "quantized_ops": list(QUANTIZED_OPS),
        "float_onnx_sha256": float_onnx_sha256,
        "calibration": calibration.describe(),
    }


def quantize_in_place(encoder_onnx: Path, calibration: Calibration) -> dict[str, Any]:
    """Replace the float encoder graph at `encoder_onnx` by its INT8 version; returns the manifest record."""
    float_sha256 = hashlib.sha256(encoder_onnx.read_bytes()).hexdigest()
    with tempfile.TemporaryDirectory() as tmp:
        quantized = quantize_frame_encoder(encoder_onnx, Path(tmp) / "int8.onnx", calibration)
        quantized.replace(encoder_onnx)
    return quantization_record(calibration, float_sha256)
