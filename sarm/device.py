"""Where `sarm embed|train|eval|rabc` compute: `--device auto|cpu|cuda`, resolved in one place.

`auto` is the CLI default: CUDA when a GPU is visible, else the CPU (so on a machine without one, auto is cpu).
Library functions default to `cpu`, so the gateway and the jobs API never move by themselves. PyTorch code takes
`resolve_device`; ONNX Runtime sessions take `onnx_providers` (CUDA needs the onnxruntime-gpu build's
CUDAExecutionProvider). Asking for CUDA where there is none is one clear line (DeviceError), never a fallback.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal, get_args

if TYPE_CHECKING:
    import torch

DeviceName = Literal["auto", "cpu", "cuda"]
DEVICES: tuple[str, ...] = get_args(DeviceName)
CPU_PROVIDER = "CPUExecutionProvider"
CUDA_PROVIDER = "CUDAExecutionProvider"
# For --help: one sentence every command repeats.
DEVICE_HELP = "auto: CUDA when a GPU is visible, else CPU; cpu; or cuda (an error where there is none)."


class DeviceError(ValueError):
    """A device that does not exist here or is not one of DEVICES."""


def _check_name(name: str) -> None:
    if name not in DEVICES:
        raise DeviceError(f"--device must be one of {', '.join(DEVICES)}; got {name!r}")


def cuda_visible() -> bool:
    import torch

    return bool(torch.cuda.is_available())


def resolve_device(name: str) -> torch.device:
    """The torch device for `name` (auto, cpu or cuda); raises DeviceError for cuda without a visible GPU."""
    import torch

    _check_name(name)
    if name == "auto":
        return torch.device("cuda" if cuda_visible() else "cpu")
    if name == "cuda" and not cuda_visible():
        raise DeviceError(
            "--device cuda: no CUDA device is visible (torch.cuda.is_available() is False); use --device cpu or auto"
        )
    return torch.device(name)


def onnx_providers(name: str) -> list[str]:
    """ONNX Runtime execution providers for `name`: CUDA first (CPU after it, for the operators CUDA lacks) when
    asked for and present; auto takes CUDA only when onnxruntime has it and a GPU is visible."""
    import onnxruntime as ort

    _check_name(name)
    if name == "cpu":
        return [CPU_PROVIDER]
    available = ort.get_available_providers()
    has_cuda = CUDA_PROVIDER in available
    if name == "cuda" and not has_cuda:
        raise DeviceError(
            f"--device cuda: this onnxruntime has no {CUDA_PROVIDER} (it has {', '.join(available)}); install "
            "onnxruntime-gpu, or use --device cpu or auto"
        )
    if name == "auto" and not (has_cuda and cuda_visible()):
        return [CPU_PROVIDER]
    return [CUDA_PROVIDER, CPU_PROVIDER]
