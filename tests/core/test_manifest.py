"""The typed model contract: defaults for manifests written before a field existed, and errors naming the field."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from sarm.manifest import Manifest, ManifestError, read_manifest

RAW: dict[str, Any] = {
    "format": "sarm-model-repo/1",
    "target": "cpu",
    "checkpoint": {"path": "ckpt", "sha256": "ab" * 32, "labels": "stage"},
    "frame_encoder": {"id": "clip-vit-b32", "version": "1", "dim": 512, "path": "/clip"},
    "text_encoder": {"id": "clip-vit-b32", "version": "1", "dim": 512},
    "stage_names": ["reach", "grasp"],
    "proportions": [0.4, 0.6],
    "tasks": [{"instruction": "pick", "stage_names": ["reach", "grasp"], "proportions": [0.4, 0.6]}],
    "window": {"frames": 9, "max_rewind": 4, "stride_seconds": 1.0, "sequence_length": 13},
    "num_cameras": 1,
    "image": {"height": 48, "width": 64},
    "models": {"encoder": "sarm_frame_encoder", "heads": "sarm_heads"},
    "onnx": {"encoder": "sarm_frame_encoder/1/model.onnx", "heads": "sarm_heads/1/model.onnx"},
    "onnx_sha256": {"encoder": "0" * 64, "heads": "1" * 64},
}


def test_a_manifest_from_before_window_modes_reads_as_causal_sparse_without_state() -> None:
    manifest = Manifest.from_dict(RAW)
    assert manifest.window.mode == "causal" and manifest.window.live
    assert manifest.heads == ("sparse",) and manifest.state_dim == 0 and manifest.max_batch == 64
    assert manifest.window.stride(80.0) == 80 and manifest.window.stride(30.0) == 30
    assert manifest.version == "ab" * 6 and manifest.image_size == (48, 64)
    assert manifest.frame_encoder.extra == {"path": "/clip"}  # recorded extras survive a round trip
    assert Manifest.from_dict(manifest.to_dict()) == manifest


def test_a_centered_window_strides_in_frames_whatever_the_fps() -> None:
    raw = copy.deepcopy(RAW)
    raw["window"] = {"mode": "centered", "frames": 9, "max_rewind": 0, "stride_frames": 30, "sequence_length": 9}
    raw.update(architecture="lerobot-sarm", num_cameras=1)
    manifest = Manifest.from_dict(raw)
    assert not manifest.window.live and manifest.window.stride(50.0) == 30 == manifest.window.stride(80.0)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda r: r["window"].update(mode="sideways"), "window.mode"),
        (lambda r: r["window"].update(mode="centered"), "stride_frames"),
        (lambda r: r["window"].pop("stride_seconds"), "stride_seconds"),
        (lambda r: r.update(heads=["sparse", "sparse"]), "heads"),
        (lambda r: r.update(heads=["fine"]), "heads"),
        (lambda r: r["tasks"][0].update(stage_names=["reach", "fly"]), "tasks[0]"),
        (lambda r: r.update(num_cameras=0), "num_cameras"),
        (lambda r: r["onnx"].pop("heads"), "'heads'"),
        (lambda r: r.pop("image"), "'image'"),
        (lambda r: r.update(format="sarm-model-repo/0"), "format"),
        (lambda r: r.update(architecture="gpt"), "architecture"),
        (lambda r: r["image"].update(resize="stretch"), "image.resize"),
        (lambda r: r.update(heads=["sparse", "dense"]), "dense_stage_names"),
        (lambda r: r["window"].update(mode="centered", stride_frames=3), "architecture 'sarm'"),
    ],
)
def test_inconsistent_manifests_are_refused_naming_the_field(change: Any, field: str) -> None:
    raw = copy.deepcopy(RAW)
    change(raw)
    with pytest.raises(ManifestError, match=field.replace("[", r"\[").replace("]", r"\]")):
        Manifest.from_dict(raw)


def test_read_manifest_says_what_to_run(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="sarm export"):
        read_manifest(tmp_path)
    (tmp_path / "sarm_manifest.json").write_text("{not json")
    with pytest.raises(ManifestError, match="not JSON"):
        read_manifest(tmp_path)
    (tmp_path / "sarm_manifest.json").write_text(json.dumps(RAW))
    assert read_manifest(tmp_path) == Manifest.from_dict(RAW)


def test_a_quantized_encoder_is_known_by_its_calibration_too() -> None:
    """Float and INT8 embeddings differ: replicas sharing Redis must key them apart."""
    raw = copy.deepcopy(RAW)
    plain = Manifest.from_dict(raw).frame_encoder.fingerprint
    raw["frame_encoder"]["quantization"] = {"mode": "int8-qdq-per-channel", "calibration": {"frames_sha256": "abc"}}
    quantized = Manifest.from_dict(raw).frame_encoder.fingerprint
    assert plain == "clip-vit-b32@1" and quantized == "clip-vit-b32@1+int8-qdq-per-channel:abc"
