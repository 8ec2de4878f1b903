"""Where the models run, behind one interface: `local` (ONNX Runtime in this process) and `triton`.

encode(images uint8 (N, H, W, 3))   -> embeddings float32 (N, D)
heads(*inputs)                      -> outputs: the heads graph's tensors in the manifest's heads_inputs /
                                       heads_outputs order (ours: frames (B, L, C, D), text (B, D_text), lengths
                                       (B, 1) -> stage_probs (B, K), tau, progress, confidence (B, 1); an imported
                                       LeRobot SARM: frames, text, state -> per head stage_probs, tau, progress)
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Protocol

import numpy as np
import onnxruntime as ort

from sarm.encoders.onnx_export import INPUT_NAME
from sarm.export.model_repo import onnx_path
from sarm.export.session import cpu_session_options
from sarm.manifest import Manifest
from sarm.scoring.options import EngineOptions


class Backend(Protocol):
    name: str
    batches_itself: bool  # True: send whole batches and let the server batch (Triton); False: micro-batch here

    async def encode(self, images: np.ndarray) -> np.ndarray: ...

    async def heads(self, *inputs: np.ndarray) -> tuple[np.ndarray, ...]: ...

    async def ready(self) -> bool: ...

    async def close(self) -> None: ...


class LocalBackend:
    """The repository's ONNX files in onnxruntime, run on worker threads so the event loop never blocks."""

    name = "local"
    batches_itself = False

    def __init__(
        self,
        repo: Path,
        manifest: Manifest,
        intra_op_threads: int = 1,
        workers: int = 1,
        providers: Sequence[str] = ("CPUExecutionProvider",),  # sarm.device.onnx_providers (sarm rabc --device)
    ) -> None:
        # No busy-waiting threads: on a small box they take the cores the decoders, RPCs and clients need.
        options = cpu_session_options(intra_op_threads)

        def session(role: str) -> ort.InferenceSession:
            path = onnx_path(repo, manifest, role)
            return ort.InferenceSession(str(path), options, providers=list(providers))

        self._encoder, self._heads = session("encoder"), session("heads")
        self._inputs, self._outputs = manifest.heads_inputs, list(manifest.heads_outputs)
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="sarm-onnx")

    async def encode(self, images: np.ndarray) -> np.ndarray:
        outputs = await asyncio.get_running_loop().run_in_executor(
            self._pool, self._encoder.run, None, {INPUT_NAME: images}
        )
        return np.asarray(outputs[0], dtype=np.float32)

    async def heads(self, *inputs: np.ndarray) -> tuple[np.ndarray, ...]:
        feeds = dict(zip(self._inputs, inputs, strict=True))
        outputs = await asyncio.get_running_loop().run_in_executor(self._pool, self._heads.run, self._outputs, feeds)
        return tuple(outputs)

    async def ready(self) -> bool:
        return True  # the sessions loaded in __init__

    async def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


class BackendNotAvailable(RuntimeError):
    """The configured backend cannot be used (misconfigured)."""


def make_backend(settings: EngineOptions, repo: Path, manifest: Manifest) -> Backend:
    if settings.backend == "local":
        return LocalBackend(repo, manifest, settings.intra_op_threads, settings.inference_workers)
    if settings.backend == "triton":
        from sarm.scoring.triton_backend import TritonBackend  # tritonclient only when asked for

        return TritonBackend(settings.triton_url, manifest, settings.triton_timeout_s)
    raise BackendNotAvailable(f"unknown backend {settings.backend!r}: use local or triton")
