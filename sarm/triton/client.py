"""Request tensors for tritonclient from plain numpy arrays (gRPC, gRPC asyncio and HTTP clients alike)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.utils import np_to_triton_dtype


def infer_inputs(
    feed: Mapping[str, np.ndarray], input_type: Callable[[str, list[int], str], Any] = grpcclient.InferInput
) -> list[Any]:
    """One `input_type` tensor per array, named by its key. `grpcclient.InferInput` serves the gRPC and the
    asyncio gRPC clients (the asyncio module re-exports it); pass `httpclient.InferInput` for HTTP."""
    tensors = []
    for name, value in feed.items():
        value = np.ascontiguousarray(value)
        tensor = input_type(name, list(value.shape), np_to_triton_dtype(value.dtype))
        tensor.set_data_from_numpy(value)
        tensors.append(tensor)
    return tensors
