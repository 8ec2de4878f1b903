"""Write Triton model folders (``config.pbtxt`` + ``1/model.py`` + ``1/model.onnx``) for the python backend."""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

# Triton's python backend ships the stub, not an onnxruntime backend, so an ONNX model is served by this template.
MODEL_TEMPLATE = Path(__file__).with_name("onnx_python_model.py")

TRITON_DTYPES = frozenset(
    {"TYPE_BOOL", "TYPE_UINT8", "TYPE_INT8", "TYPE_INT32", "TYPE_INT64", "TYPE_FP16", "TYPE_FP32", "TYPE_FP64"}
)


@dataclass(frozen=True)
class TensorSpec:
    """One model input or output: Triton dtype (``TYPE_FP32``…) and dims without the batch dim (-1 = variable)."""

    name: str
    dtype: str
    dims: Sequence[int]

    def __post_init__(self) -> None:
        if self.dtype not in TRITON_DTYPES:
            raise ValueError(f"{self.name}: dtype {self.dtype!r} is not one of {sorted(TRITON_DTYPES)}")
        if not self.dims or any(d == 0 or d < -1 for d in self.dims):
            raise ValueError(f"{self.name}: dims must be positive or -1, got {self.dims}")
        object.__setattr__(self, "dims", tuple(self.dims))

    def pbtxt(self) -> str:
        dims = ", ".join(str(d) for d in self.dims)
        return f'  {{ name: "{self.name}" data_type: {self.dtype} dims: [ {dims} ] }}'


def model_config_pbtxt(
    name: str,
    inputs: list[TensorSpec],
    outputs: list[TensorSpec],
    *,
    max_batch_size: int,
    preferred_batch_sizes: list[int],
    max_queue_delay_us: int,
    instances: int = 1,
    intra_op_num_threads: int = 1,
) -> str:
    """The ``config.pbtxt`` text of a python-backend model with dynamic batching on CPU instances."""
    if max_batch_size < 1:
        raise ValueError("max_batch_size must be >= 1: the template batches along the first dimension")
    if any(not 1 <= size <= max_batch_size for size in preferred_batch_sizes):
        raise ValueError(f"preferred_batch_sizes {preferred_batch_sizes} must lie in [1, {max_batch_size}]")
    sizes = ", ".join(str(size) for size in preferred_batch_sizes)
    preferred = f"preferred_batch_size: [ {sizes} ] " if preferred_batch_sizes else ""
    return "\n".join(
        [
            f'name: "{name}"',
            'backend: "python"',
            f"max_batch_size: {max_batch_size}",
            "input [",
            ",\n".join(spec.pbtxt() for spec in inputs),
            "]",
            "output [",
            ",\n".join(spec.pbtxt() for spec in outputs),
            "]",
            f"dynamic_batching {{ {preferred}max_queue_delay_microseconds: {max_queue_delay_us} }}",
            f"instance_group [ {{ count: {instances} kind: KIND_CPU }} ]",
            f'parameters {{ key: "intra_op_num_threads" value: {{ string_value: "{intra_op_num_threads}" }} }}',
            "",
        ]
    )


def write_onnx_python_model(
    repo: Path,
    name: str,
    onnx_path: Path,
    inputs: list[TensorSpec],
    outputs: list[TensorSpec],
    max_batch_size: int,
    preferred_batch_sizes: list[int],
    max_queue_delay_us: int,
    instances: int = 1,
    intra_op_num_threads: int = 1,
) -> Path:
    """Write ``repo/name`` serving ``onnx_path`` through the python backend; returns the model folder.

    The ONNX model must be self-contained (exported with ``external_data=False``): only ``model.onnx`` is copied.
    """
    config = model_config_pbtxt(
        name,
        inputs,
        outputs,
        max_batch_size=max_batch_size,
        preferred_batch_sizes=preferred_batch_sizes,
        max_queue_delay_us=max_queue_delay_us,
        instances=instances,
        intra_op_num_threads=intra_op_num_threads,
    )
    model_dir = Path(repo) / name
    version_dir = model_dir / "1"
    version_dir.mkdir(parents=True, exist_ok=True)
    target = version_dir / "model.onnx"
    if Path(onnx_path).resolve() != target.resolve():  # an exporter may have written it in place already
        shutil.copyfile(onnx_path, target)
    shutil.copyfile(MODEL_TEMPLATE, version_dir / "model.py")
    (model_dir / "config.pbtxt").write_text(config)
    return model_dir
