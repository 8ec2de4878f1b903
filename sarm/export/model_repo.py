"""`sarm export`: a checkpoint → a Triton model repository the gateway and `tritonserver` both load.

    <repo>/sarm_manifest.json          checkpoint, encoder ids/versions, stage names, tasks (instruction, stages,
                                       ᾱ), window, image size, models
    <repo>/sarm_frame_encoder/         uint8 images (B, H, W, 3) → embeddings (B, D_frame); resize/normalise inside
    <repo>/sarm_heads/                 window embeddings + instruction embedding + lengths → scores

Each model folder holds its ONNX graph (the manifest's "onnx" paths): `1/model.onnx` on CPU, which the
gateway's local backend runs too, and `model.onnx` beside `config.pbtxt` on GPU, the source its TensorRT
engine is built from. Nothing else sits at the top level: Triton takes every folder there for a model.

`--target cpu`: python-backend models running the ONNX files with onnxruntime (the `tritonserver` of
nvidia-pytriton has only that backend). `--target gpu`: `tensorrt_plan` models whose engines are built on
the target GPU at deploy time by `build_engines.sh` (engines are specific to a GPU and TensorRT version).
Instruction embeddings are not a Triton model: the gateway computes each instruction once and caches it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from sarm.encoders.base import check_encoder
from sarm.encoders.onnx_export import INPUT_NAME, OUTPUT_NAME, export_frame_encoder
from sarm.encoders.registry import load_frame_encoder
from sarm.encoders.weights import local_weights
from sarm.export.onnx_heads import export_heads
from sarm.export.quantize import CalibrationError, calibration_frames, quantize_in_place
from sarm.manifest import MANIFEST, MANIFEST_FORMAT, Manifest, read_manifest
from sarm.model.configuration_sarm import SARMConfig
from sarm.training.checkpoint import (
    LEROBOT_ARCHITECTURE,
    CheckpointError,
    CheckpointInfo,
    checkpoint_architecture,
    checkpoint_digest,
    load_checkpoint,
)
from sarm.triton.repository import Batching, TensorSpec, model_config_pbtxt, write_onnx_python_model

__all__ = ["MANIFEST", "Manifest", "export_model_repository", "onnx_path", "read_manifest"]

Target = Literal["cpu", "gpu"]
ENCODER_MODEL = "sarm_frame_encoder"
HEADS_MODEL = "sarm_heads"
MODELS = {"encoder": ENCODER_MODEL, "heads": HEADS_MODEL}  # role in the manifest -> Triton model name
# A lone request waits max_queue_delay_us for company: kept well under the 2 ms serving-overhead budget.
BATCHING = Batching(max_batch_size=64, preferred_batch_sizes=(8, 16, 32, 64), max_queue_delay_us=500)


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def tensor_specs(manifest: Manifest) -> dict[str, tuple[list[TensorSpec], list[TensorSpec]]]:
    """Inputs and outputs of both models, per item (Triton adds the batch dimension)."""
    h, w = manifest.image_size
    frame_dim, text_dim = manifest.frame_encoder.dim, manifest.text_encoder.dim
    window = manifest.window
    scalar = [1]
    if manifest.architecture == "lerobot-sarm":
        heads_inputs = [
            TensorSpec("frames", "TYPE_FP32", [window.frames, frame_dim]),
            TensorSpec("text", "TYPE_FP32", [text_dim]),
            TensorSpec("state", "TYPE_FP32", [window.frames, manifest.state_dim]),
        ]
        stages = {"sparse": len(manifest.stage_names), "dense": len(manifest.dense_stage_names)}
        heads_outputs = [
            TensorSpec(f"{head}_{name}", "TYPE_FP32", [stages[head]] if name == "stage_probs" else scalar)
            for head in manifest.heads
            for name in ("stage_probs", "tau", "progress")
        ]
    else:
        heads_inputs = [
            TensorSpec("frames", "TYPE_FP32", [window.sequence_length, manifest.num_cameras, frame_dim]),
            TensorSpec("text", "TYPE_FP32", [text_dim]),
            TensorSpec("lengths", "TYPE_INT64", scalar),
        ]
        if manifest.state_dim:
            heads_inputs.append(TensorSpec("state", "TYPE_FP32", [window.sequence_length, manifest.state_dim]))
        heads_outputs = [
            TensorSpec("stage_probs", "TYPE_FP32", [len(manifest.stage_names)]),
            *(TensorSpec(name, "TYPE_FP32", scalar) for name in ("tau", "progress", "confidence")),
        ]
    assert [t.name for t in heads_inputs] == list(manifest.heads_inputs)
    assert [t.name for t in heads_outputs] == list(manifest.heads_outputs)
    return {
        ENCODER_MODEL: (
            [TensorSpec(INPUT_NAME, "TYPE_UINT8", [h, w, 3])],
            [TensorSpec(OUTPUT_NAME, "TYPE_FP32", [frame_dim])],
        ),
        HEADS_MODEL: (heads_inputs, heads_outputs),
    }


def manifest_dict(
    checkpoint: Path,
    info: CheckpointInfo,
    config: SARMConfig,
    target: str,
    image_size: tuple[int, int],
    frame_encoder: dict[str, Any],
    onnx: dict[str, str],
    onnx_sha256: dict[str, str],
    image_resize: str = "exact",
) -> dict[str, Any]:
    """The manifest of a checkpoint's model: for a repository (its ONNX graphs) or for the PyTorch backend (none)."""
    return {
        "format": MANIFEST_FORMAT,
        "target": target,
        "checkpoint": {"path": str(checkpoint), "sha256": checkpoint_digest(checkpoint), "labels": info.labels},
        "frame_encoder": frame_encoder,
        "text_encoder": info.text_encoder,
        "stage_names": config.stage_names,
        "proportions": config.proportions,
        "tasks": config.tasks,
        "window": {
            "mode": "causal",
            "frames": config.window_frames,
            "max_rewind": config.max_rewind,
            "stride_seconds": config.stride_seconds,
            "sequence_length": config.sequence_length,
        },
        "heads": ["sparse"],
        "state_dim": config.state_dim,  # raw joint state the heads read (z-scored inside by the checkpoint's stats)
        "state_key": info.training.get("state_key", "observation.state") if config.state_dim else "",
        "num_cameras": config.num_cameras,
        "image": {"height": image_size[0], "width": image_size[1], "resize": image_resize},
        "max_batch": BATCHING.max_batch_size,
        "models": dict(MODELS),
        "onnx": onnx,
        "onnx_sha256": onnx_sha256,
    }


def export_model_repository(
    checkpoint: Path,
    out: Path,
    target: Target = "cpu",
    image_size: tuple[int, int] | None = None,
    calibration: Sequence[Path] = (),
) -> Manifest:
    """Write the repository and return its manifest. With `calibration` datasets the frame encoder is INT8
    (sarm.export.quantize), and frame_encoder.quantization in the manifest says how it was made."""
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} is not empty: export into a new directory")
    if calibration and target != "cpu":
        raise CalibrationError("--quantize int8 is for --target cpu: TensorRT builds its own engines (FP16) on the GPU")
    sources = {name: out / name / ("1" if target == "cpu" else "") / "model.onnx" for name in MODELS.values()}
    if checkpoint_architecture(checkpoint) == LEROBOT_ARCHITECTURE:
        from sarm.lerobot.export import export_lerobot_graphs  # CLIP and the imported network: torch

        if calibration:
            raise CalibrationError("--quantize int8 is for our own models; an imported LeRobot SARM exports float")
        if image_size is not None:
            raise CheckpointError("--image-size does not apply to an imported LeRobot SARM: CLIP crops any frame")
        raw = export_lerobot_graphs(checkpoint, out, target, {r: sources[n] for r, n in MODELS.items()})
        return _write_repository(out, Manifest.from_dict({**raw, "models": dict(MODELS)}), target)
    model, info = load_checkpoint(checkpoint)
    encoder = load_frame_encoder(
        info.frame_encoder["id"], **local_weights(info.frame_encoder["id"], info.frame_encoder.get("model_path"))
    )
    try:
        check_encoder(encoder, info.frame_encoder["id"], info.frame_encoder["version"])
    except ValueError as error:
        message = f"{checkpoint} was trained on embeddings this encoder no longer gives: {error}"
        raise CheckpointError(message) from error
    cameras = info.training.get("cameras", {})
    if encoder.image_resize == "clip":  # CLIPProcessor's crop of any frame, on the host: the graph takes crops
        if image_size is not None:
            raise CheckpointError("--image-size does not apply to a CLIP frame encoder: it crops any frame as CLIP")
        image_size = (encoder.input_size, encoder.input_size)
    if image_size is None and not cameras:
        raise CheckpointError(f"{checkpoint} does not record its camera resolution: pass --image-size HxW")
    height, width = image_size or next(iter(cameras.values()))
    frames = calibration_frames(calibration, image_size=(height, width)) if calibration else None
    for path in sources.values():
        path.parent.mkdir(parents=True, exist_ok=True)
    encoder_onnx = export_frame_encoder(encoder, sources[ENCODER_MODEL], height=height, width=width)
    quantization = quantize_in_place(encoder_onnx, frames) if frames is not None else None
    heads_onnx = export_heads(model, sources[HEADS_MODEL])
    # What this repository's graph is (float unless quantized here), not what the training embeddings were.
    frame_encoder = {
        **{k: v for k, v in info.frame_encoder.items() if k != "quantization"},
        **({"quantization": quantization} if quantization else {}),
    }
    manifest = Manifest.from_dict(
        manifest_dict(
            checkpoint,
            info,
            model.config,
            target,
            (height, width),
            frame_encoder,
            image_resize=encoder.image_resize,
            onnx={role: str(sources[name].relative_to(out)) for role, name in MODELS.items()},
            onnx_sha256={"encoder": sha256_of(encoder_onnx), "heads": sha256_of(heads_onnx)},
        )
    )
    return _write_repository(out, manifest, target)


def _write_repository(out: Path, manifest: Manifest, target: Target) -> Manifest:
    """Triton's model configurations (and on GPU the engine build script) around the graphs, then the manifest."""
    specs = tensor_specs(manifest)
    for role, name in MODELS.items():
        inputs, outputs = specs[name]
        onnx_path = out / manifest.onnx[role]
        # On CPU the graph is already where the python backend reads it (1/model.onnx).
        if target == "cpu":
            write_onnx_python_model(out, name, onnx_path, inputs, outputs, BATCHING)
        else:
            (out / name / "1").mkdir(parents=True)
            pbtxt = model_config_pbtxt(
                name, inputs, outputs, BATCHING, runtime='platform: "tensorrt_plan"', kind="KIND_GPU"
            )
            (out / name / "config.pbtxt").write_text(pbtxt)
    if target == "gpu":
        _write_engine_build_script(out, specs)
    manifest.write(out)
    return manifest


def _write_engine_build_script(out: Path, specs: dict[str, tuple[list[TensorSpec], list[TensorSpec]]]) -> None:
    """A script that builds FP16 engines with optimisation profiles for batch 1..max on the target GPU."""
    lines = [
        "#!/usr/bin/env bash",
        "# Builds the TensorRT engines of this repository on the GPU it runs on (inside NVIDIA's Triton",
        "# container, where TensorRT matches the server). Run once at deploy time, before tritonserver.",
        "set -euo pipefail",
        'cd "$(dirname "$0")"',
        "TRTEXEC=${TRTEXEC:-$(command -v trtexec || echo /usr/src/tensorrt/bin/trtexec)}",
    ]
    for name, (inputs, _) in specs.items():

        def shapes(batch: int, inputs: list[TensorSpec] = inputs) -> str:
            return ",".join(f"{s.name}:{'x'.join(map(str, [batch, *s.dims]))}" for s in inputs)

        lines.append(
            f'"$TRTEXEC" --onnx={name}/model.onnx --saveEngine={name}/1/model.plan --fp16 '
            f"--minShapes={shapes(1)} --optShapes={shapes(BATCHING.preferred_batch_sizes[1])} "
            f"--maxShapes={shapes(BATCHING.max_batch_size)}"
        )
    script = out / "build_engines.sh"
    script.write_text("\n".join(lines) + "\n")
    script.chmod(0o755)


def onnx_path(repo: Path, manifest: Manifest, role: str) -> Path:
    """The ONNX graph of `role` ("encoder" or "heads"), refused unless it is the one the manifest describes
    (a graph swapped or re-exported on its own would score with stage names and ᾱ of another model)."""
    path = repo / manifest.onnx[role]
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: re-export the repository with `sarm export`")
    if sha256_of(path) != manifest.onnx_sha256[role]:
        raise ValueError(
            f"{path} does not match {repo / MANIFEST} (sha256 differs): re-export the repository "
            "with `sarm export` instead of replacing files in it"
        )
    return path
