"""The `triton` backend: the repository's two models on a Triton Inference Server, over its asyncio gRPC client.

Triton batches across requests itself (dynamic batching), so whole batches are sent as they are, split only
at the models' max batch size. Each request carries what is left of the caller's deadline.
"""

from __future__ import annotations

import asyncio

import numpy as np
import tritonclient.grpc.aio as triton
from tritonclient.utils import InferenceServerException

from sarm.encoders.onnx_export import INPUT_NAME, OUTPUT_NAME
from sarm.manifest import Manifest
from sarm.scoring.deadlines import remaining
from sarm.scoring.errors import BackendUnavailable, DeadlineExceeded
from sarm.triton.client import infer_inputs

READY_TIMEOUT_S = 2.0  # a readiness probe that takes longer than this counts as not ready


class TritonBackend:
    name = "triton"
    batches_itself = True

    def __init__(self, url: str, manifest: Manifest, timeout_s: float) -> None:
        self.url = url
        self.timeout_s = timeout_s  # for calls without a deadline
        self.models = dict(manifest.models)
        self.max_batch = manifest.max_batch
        self._inputs, self._outputs = manifest.heads_inputs, manifest.heads_outputs
        self._client = triton.InferenceServerClient(url)

    async def _infer(self, model: str, inputs: dict[str, np.ndarray], outputs: tuple[str, ...]) -> list[np.ndarray]:
        tensors = infer_inputs(inputs)
        left = remaining()
        try:
            result = await self._client.infer(
                model,
                tensors,
                outputs=[triton.InferRequestedOutput(n) for n in outputs],
                client_timeout=self.timeout_s if left is None else left,
            )
        except InferenceServerException as error:
            if "DEADLINE_EXCEEDED" in str(error.status()):
                raise DeadlineExceeded(f"deadline exceeded waiting for Triton model {model}") from error
            raise BackendUnavailable(f"Triton at {self.url} failed on {model}: {error.message()}") from error
        return [result.as_numpy(name) for name in outputs]

    async def _batched(self, model: str, inputs: dict[str, np.ndarray], outputs: tuple[str, ...]) -> list[np.ndarray]:
        rows, size = len(next(iter(inputs.values()))), self.max_batch
        parts = await asyncio.gather(
            *(
                self._infer(model, {k: v[i : i + size] for k, v in inputs.items()}, outputs)
                for i in range(0, rows, size)
            )
        )
        return [np.concatenate(chunks) for chunks in zip(*parts, strict=True)]

    async def encode(self, images: np.ndarray) -> np.ndarray:
        [embeddings] = await self._batched(self.models["encoder"], {INPUT_NAME: images}, (OUTPUT_NAME,))
        return embeddings.astype(np.float32, copy=False)

    async def heads(self, *inputs: np.ndarray) -> tuple[np.ndarray, ...]:
        named = dict(zip(self._inputs, inputs, strict=True))
        return tuple(await self._batched(self.models["heads"], named, self._outputs))

    async def ready(self) -> bool:
        """Triton is up and both models are loaded."""
        try:
            models = await asyncio.gather(
                *(self._client.is_model_ready(name, client_timeout=READY_TIMEOUT_S) for name in self.models.values())
            )
            return bool(await self._client.is_server_ready(client_timeout=READY_TIMEOUT_S)) and all(models)
        except InferenceServerException:
            return False

    async def close(self) -> None:
        await self._client.close()
