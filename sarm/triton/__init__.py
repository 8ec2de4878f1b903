"""Serving through NVIDIA Triton: launch the tritonserver binary and write python-backend model folders."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from sarm.triton.repository import Batching, TensorSpec, model_config_pbtxt, write_onnx_python_model

if TYPE_CHECKING:
    from sarm.triton.server import (
        TritonEndpoints,
        TritonError,
        TritonServer,
        free_port,
        free_ports,
        tritonserver_command,
        tritonserver_env,
    )

# Loaded on first use, so that `python -m sarm.triton.server` does not find its module already imported (runpy warns).
_SERVER_NAMES = frozenset(
    {
        "TritonEndpoints",
        "TritonError",
        "TritonServer",
        "free_port",
        "free_ports",
        "tritonserver_command",
        "tritonserver_env",
    }
)


def __getattr__(name: str) -> Any:
    if name in _SERVER_NAMES:
        return getattr(importlib.import_module("sarm.triton.server"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "Batching",
    "TensorSpec",
    "TritonEndpoints",
    "TritonError",
    "TritonServer",
    "free_port",
    "free_ports",
    "model_config_pbtxt",
    "tritonserver_command",
    "tritonserver_env",
    "write_onnx_python_model",
]
