"""Write Triton model folders (``config.pbtxt`` + ``1/model.py`` + ``1/model.onnx``) for the python backend."""

from __future__ import annotations

import shutil
from collections.abc import Mapping, Sequence
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


@dataclass(frozen=True)
class Batching:
    """Dynamic batching of one model: Triton coalesces requests up to `max_batch_size` along dim 0."""

    max_batch_size: int
    preferred_batch_sizes: Sequence[int] = ()
    max_queue_delay_us: int = 0  # a lone request waits this long for company
    instances: int = 1

    def __post_init__(self) -> None:
        if self.max_batch_size < 1:
            raise ValueError("max_batch_size must be >= 1: models batch along the first dimension")
        if any(not 1 <= size <= self.max_batch_size for size in self.preferred_batch_sizes):
            sizes = list(self.preferred_batch_sizes)
            raise ValueError(f"preferred_batch_sizes {sizes} must lie in [1, {self.max_batch_size}]")
        if self.max_queue_delay_us < 0 or self.instances < 1:
            raise ValueError("max_queue_delay_us must be >= 0 and instances >= 1")


def model_config_pbtxt(
    name: str,
    inputs: Sequence[TensorSpec],
    outputs: Sequence[TensorSpec],
    batching: Batching,
    *,
    runtime: str = 'backend: "python"',
    kind: str = "KIND_CPU",
    parameters: Mapping[str, str] | None = None,
) -> str:
    """The ``config.pbtxt`` text of a dynamically batched model; `runtime` is its backend or platform line
    (``backend: "python"``, ``platform: "tensorrt_plan"``)."""
    sizes = ", ".join(str(size) for size in batching.preferred_batch_sizes)
    preferred = f"preferred_batch_size: [ {sizes} ] " if sizes else ""
    lines = [
        f'name: "{name}"',
        runtime,
        f"max_batch_size: {batching.max_batch_size}",
        "input [",
        ",\n".join(spec.pbtxt() for spec in inputs),
        "]",
        "output [",
        ",\n".join(spec.pbtxt() for spec in outputs),
        "]",
        f"dynamic_batching {{ {preferred}max_queue_delay_microseconds: {batching.max_queue_delay_us} }}",
        f"instance_group [ {{ count: {batching.instances} kind: {kind} }} ]",
    ]
    for key, value in (parameters or {}).items():
        lines.append(f'parameters {{ key: "{key}" value: {{ string_value: "{value}" }} }}')
    return "\n".join([*lines, ""])


def write_onnx_python_model(
    repo: Path,
    name: str,
    onnx_path: Path,
    inputs: Sequence[TensorSpec],
    outputs: Sequence[TensorSpec],
    batching: Batching,
    intra_op_num_threads: int = 1,
) -> Path:
    """Write ``repo/name`` serving ``onnx_path`` through the python backend; returns the model folder.

    The ONNX model must be self-contained (exported with ``external_data=False``): only ``model.onnx`` is copied.
    """
    config = model_config_pbtxt(
        name, inputs, outputs, batching, parameters={"intra_op_num_threads": str(intra_op_num_threads)}
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
