"""Generic Triton python-backend model that runs ``model.onnx`` with onnxruntime.

Copied verbatim as ``<repo>/<name>/<version>/model.py`` next to ``model.onnx`` (see
``sarm.triton.repository``). Every input declared in ``config.pbtxt`` feeds the ONNX input of the same name and every
declared output is the ONNX output of the same name. One ``execute()`` receives the batch Triton's dynamic batcher
formed: the requests' inputs are concatenated along the batch dimension, the session runs once, and the outputs are
split back per request. A request that cannot be served gets its own error response; it never fails its neighbours
or crashes the stub. Triton has already checked every request's dtypes and shapes against ``config.pbtxt``.

Model-config parameters: ``intra_op_num_threads`` (default 1).
This file imports ``triton_python_backend_utils``, which exists only inside Triton's python stub.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils

# onnxruntime's type strings for the Triton dtypes we use, to fail at load time rather than per request.
_ORT_TYPES = {
    "TYPE_BOOL": "tensor(bool)",
    "TYPE_UINT8": "tensor(uint8)",
    "TYPE_INT8": "tensor(int8)",
    "TYPE_INT32": "tensor(int32)",
    "TYPE_INT64": "tensor(int64)",
    "TYPE_FP16": "tensor(float16)",
    "TYPE_FP32": "tensor(float)",
    "TYPE_FP64": "tensor(double)",
}


def _parameter(config: dict[str, Any], key: str, default: str) -> str:
    value = config.get("parameters", {}).get(key, {}).get("string_value", "")
    return str(value) if value != "" else default


def _check_names(kind: str, declared: list[dict[str, Any]], session_args: list[Any]) -> None:
    onnx_types = {arg.name: arg.type for arg in session_args}
    for tensor in declared:
        name, dtype = tensor["name"], tensor["data_type"]
        if name not in onnx_types:
            raise ValueError(f"{kind} {name!r} is in config.pbtxt but not in model.onnx (has {sorted(onnx_types)})")
        if _ORT_TYPES.get(dtype, onnx_types[name]) != onnx_types[name]:
            raise ValueError(f"{kind} {name!r}: config.pbtxt says {dtype}, model.onnx has {onnx_types[name]}")


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        config = json.loads(args["model_config"])
        self.batched = int(config.get("max_batch_size", 0)) > 0
        self.input_names = [t["name"] for t in config["input"]]
        self.output_names = [t["name"] for t in config["output"]]
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(_parameter(config, "intra_op_num_threads", "1"))
        options.inter_op_num_threads = 1
        onnx_path = Path(args["model_repository"]) / args["model_version"] / "model.onnx"
        self.session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
        _check_names("input", config["input"], self.session.get_inputs())
        _check_names("output", config["output"], self.session.get_outputs())

    def execute(self, requests: list[Any]) -> list[Any]:
        feeds = [self._feed(request) for request in requests]
        if self.batched and len(feeds) > 1:
            try:
                return self._run_batched(feeds)
            except Exception:
                pass  # one bad request (or variable dims that differ) fails the merged run: isolate it below
        return [self._run_one(feed) for feed in feeds]

    def _feed(self, request: Any) -> dict[str, np.ndarray]:
        return {name: pb_utils.get_input_tensor_by_name(request, name).as_numpy() for name in self.input_names}

    def _run_batched(self, feeds: list[dict[str, np.ndarray]]) -> list[Any]:
        sizes = [len(feed[self.input_names[0]]) for feed in feeds]
        merged = {name: np.concatenate([feed[name] for feed in feeds]) for name in self.input_names}
        outputs = self.session.run(self.output_names, merged)
        return [
            _response(self.output_names, [out[start:stop] for out in outputs])
            for start, stop in itertools.pairwise(np.cumsum([0, *sizes]))
        ]

    def _run_one(self, feed: dict[str, np.ndarray]) -> Any:
        try:
            return _response(self.output_names, self.session.run(self.output_names, feed))
        except Exception as exc:
            return _error(exc)

    def finalize(self) -> None:
        del self.session


def _response(names: list[str], arrays: list[np.ndarray]) -> Any:
    tensors = [pb_utils.Tensor(name, np.ascontiguousarray(array)) for name, array in zip(names, arrays, strict=True)]
    return pb_utils.InferenceResponse(output_tensors=tensors)


def _error(exc: Exception) -> Any:
    return pb_utils.InferenceResponse(error=pb_utils.TritonError(f"{type(exc).__name__}: {exc}"))
