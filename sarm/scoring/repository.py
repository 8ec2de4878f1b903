"""The model repository a checkpoint scores through: exported once (ONNX graphs and manifest, as `sarm export
--target cpu` writes them) into a cache keyed by the checkpoint's weights and config, then reused by every CLI run,
job and Ray worker on this machine. Inference then runs the same graphs the gateway serves, in ONNX Runtime or on
Triton."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path

from sarm.manifest import MANIFEST, Manifest, read_manifest
from sarm.training.checkpoint import CONFIG, WEIGHTS, CheckpointError, checkpoint_architecture, checkpoint_digest

CACHE_ENV = "SARM_CACHE"  # where exported repositories are kept (default: ~/.cache/sarm)


def cache_root() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "sarm")


def export_key(checkpoint: Path, weights_digest: str) -> str:
    """What the export is made of: the weights and config.json (tasks, stages, ᾱ, window, encoders). Edit either
    and the checkpoint gets a fresh export instead of one that describes the old config."""
    key = hashlib.sha256(weights_digest.encode())
    key.update((checkpoint / CONFIG).read_bytes())
    return key.hexdigest()


def repository_for(checkpoint: Path, cache: Path | None = None) -> Path:
    """The exported repository of `checkpoint`, exporting it on first use (atomically: concurrent processes each
    export and the first rename wins, so no reader sees half a repository)."""
    from sarm.export.model_repo import export_model_repository  # torch export: only on a cache miss

    checkpoint_architecture(checkpoint)  # a folder that is not a checkpoint: one clear CheckpointError
    if not (checkpoint / WEIGHTS).is_file():
        raise CheckpointError(f"{checkpoint} is not a complete SARM checkpoint: {WEIGHTS} is missing")
    digest = checkpoint_digest(checkpoint)
    key = export_key(checkpoint, digest)[:16]
    folder = (cache or cache_root()) / "repos"
    repo = folder / key
    if (repo / MANIFEST).is_file() and read_manifest(repo).checkpoint.sha256 == digest:
        return repo
    folder.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=folder))
    try:
        export_model_repository(checkpoint, staging / "repo", "cpu")
        try:
            os.replace(staging / "repo", repo)
        except OSError:  # another process got there first (or a stale partial one is in the way)
            if not (repo / MANIFEST).is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return repo


def manifest_for(checkpoint: Path) -> Manifest:
    return read_manifest(repository_for(checkpoint))
