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
import json
from pathlib import Path
from typing import Any, Literal

from sarm.encoders.base import check_encoder
from sarm.encoders.onnx_export import INPUT_NAME, OUTPUT_NAME, export_frame_encoder
from sarm.encoders.registry import load_frame_encoder
from sarm.export.onnx_heads import export_heads
from sarm.training.checkpoint import CheckpointError, checkpoint_digest, load_checkpoint
from sarm.triton.repository import Batching, TensorSpec, model_config_pbtxt, write_onnx_python_model

Target = Literal["cpu", "gpu"]
MANIFEST = "sarm_manifest.json"
MANIFEST_FORMAT = "sarm-model-repo/1"
ENCODER_MODEL = "sarm_frame_encoder"
HEADS_MODEL = "sarm_heads"
MODELS = {"encoder": ENCODER_MODEL, "heads": HEADS_MODEL}  # role in the manifest -> Triton model name
# A lone request waits max_queue_delay_us for company: kept well under the 2 ms serving-overhead budget.
BATCHING = Batching(max_batch_size=64, preferred_batch_sizes=(8, 16, 32, 64), max_queue_delay_us=500)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def tensor_specs(manifest: dict[str, Any]) -> dict[str, tuple[list[TensorSpec], list[TensorSpec]]]:
    """Inputs and outputs of both models, per item (Triton adds the batch dimension)."""
    h, w = manifest["image"]["height"], manifest["image"]["width"]
    window, k = manifest["window"], len(manifest["stage_names"])
    frame_dim, text_dim = manifest["frame_encoder"]["dim"], manifest["text_encoder"]["dim"]
    scalar = [1]
    return {
        ENCODER_MODEL: (
            [TensorSpec(INPUT_NAME, "TYPE_UINT8", [h, w, 3])],
            [TensorSpec(OUTPUT_NAME, "TYPE_FP32", [frame_dim])],
        ),
        HEADS_MODEL: (
            [
                TensorSpec("frames", "TYPE_FP32", [window["sequence_length"], manifest["num_cameras"], frame_dim]),
                TensorSpec("text", "TYPE_FP32", [text_dim]),
                TensorSpec("lengths", "TYPE_INT64", scalar),
            ],
            [
                TensorSpec("stage_probs", "TYPE_FP32", [k]),
                TensorSpec("tau", "TYPE_FP32", scalar),
                TensorSpec("progress", "TYPE_FP32", scalar),
                TensorSpec("confidence", "TYPE_FP32", scalar),
            ],
        ),
    }


def export_model_repository(
    checkpoint: Path, out: Path, target: Target = "cpu", image_size: tuple[int, int] | None = None
) -> dict[str, Any]:
    """Write the repository and return its manifest."""
    model, info = load_checkpoint(checkpoint)
    encoder = load_frame_encoder(info.frame_encoder["id"])
    try:
        check_encoder(encoder, info.frame_encoder["id"], info.frame_encoder["version"])
    except ValueError as error:
        message = f"{checkpoint} was trained on embeddings this encoder no longer gives: {error}"
        raise CheckpointError(message) from error
    cameras = info.training.get("cameras", {})
    if image_size is None and not cameras:
        raise CheckpointError(f"{checkpoint} does not record its camera resolution: pass --image-size HxW")
    height, width = image_size or next(iter(cameras.values()))
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} is not empty: export into a new directory")
    sources = {name: out / name / ("1" if target == "cpu" else "") / "model.onnx" for name in MODELS.values()}
    for path in sources.values():
        path.parent.mkdir(parents=True, exist_ok=True)
    encoder_onnx = export_frame_encoder(encoder, sources[ENCODER_MODEL], height=height, width=width)
    heads_onnx = export_heads(model, sources[HEADS_MODEL])
    config = model.config
    manifest: dict[str, Any] = {
        "format": MANIFEST_FORMAT,
        "target": target,
        "checkpoint": {"path": str(checkpoint), "sha256": checkpoint_digest(checkpoint), "labels": info.labels},
        "frame_encoder": info.frame_encoder,
        "text_encoder": info.text_encoder,
        "stage_names": config.stage_names,
        "proportions": config.proportions,
        "tasks": config.tasks,
        "window": {
            "frames": config.window_frames, "max_rewind": config.max_rewind,
            "stride_seconds": config.stride_seconds, "sequence_length": config.sequence_length,
        },
        "num_cameras": config.num_cameras,
        "image": {"height": height, "width": width},
        "models": {role: name for role, name in MODELS.items()},
        "onnx": {role: str(sources[name].relative_to(out)) for role, name in MODELS.items()},
        "onnx_sha256": {"encoder": _sha256(encoder_onnx), "heads": _sha256(heads_onnx)},
    }
    specs = tensor_specs(manifest)
    for name, onnx_path in ((ENCODER_MODEL, encoder_onnx), (HEADS_MODEL, heads_onnx)):
        inputs, outputs = specs[name]
        # On CPU the graph is already where the python backend reads it (1/model.onnx).
        if target == "cpu":
            write_onnx_python_model(out, name, onnx_path, inputs, outputs, BATCHING)
        else:
            (out / name / "1").mkdir(parents=True)
            pbtxt = model_config_pbtxt(name, inputs, outputs, BATCHING, runtime='platform: "tensorrt_plan"',
                                       kind="KIND_GPU")
            (out / name / "config.pbtxt").write_text(pbtxt)
    if target == "gpu":
        _write_engine_build_script(out, specs)
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2))
    return manifest


def _write_engine_build_script(out: Path, specs: dict[str, tuple[list[TensorSpec], list[TensorSpec]]]) -> None:
    """A script that builds FP16 engines with optimisation profiles for batch 1..max on the target GPU."""
    lines = [
        "#!/usr/bin/env bash",
        "# Builds the TensorRT engines of this repository on the GPU it runs on (inside NVIDIA's Triton",
        "# container, where TensorRT matches the server). Run once at deploy time, before tritonserver.",
        "set -euo pipefail",
        'cd "$(dirname "$0")"',
        'TRTEXEC=${TRTEXEC:-$(command -v trtexec || echo /usr/src/tensorrt/bin/trtexec)}',
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


def read_manifest(repo: Path) -> dict[str, Any]:
    path = repo / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"{repo} is not a SARM model repository: {MANIFEST} is missing (run `sarm export`)")
    manifest: dict[str, Any] = json.loads(path.read_text())
    if manifest.get("format") != MANIFEST_FORMAT:
        raise ValueError(f"{path} has format {manifest.get('format')!r}; this version reads {MANIFEST_FORMAT!r}")
    return manifest



def onnx_path(repo: Path, manifest: dict[str, Any], role: str) -> Path:
    """The ONNX graph of `role` ("encoder" or "heads"), refused unless it is the one the manifest describes
    (a graph swapped or re-exported on its own would score with stage names and ᾱ of another model)."""
    path = repo / manifest["onnx"][role]
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: re-export the repository with `sarm export`")
    if _sha256(path) != manifest["onnx_sha256"][role]:
        raise ValueError(f"{path} does not match {repo / MANIFEST} (sha256 differs): re-export the repository "
                         "with `sarm export` instead of replacing files in it")
    return path
