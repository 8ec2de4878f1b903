"""What the experiment ran on: machine, library versions, thread settings, load; recorded in the results."""

from __future__ import annotations

import os
import platform
import shlex
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

PACKAGES = ("torch", "mujoco", "metaworld", "numpy", "onnxruntime")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def command_line() -> str | None:
    """The command as typed when run as `python -m bench.rabc_experiment` (None when called in-process, e.g. by a
    test: the effective settings are in the results' config either way)."""
    if not sys.argv[0].endswith(os.path.join("rabc_experiment", "__main__.py")):
        return None
    return shlex.join(["python", "-m", "bench.rabc_experiment", *sys.argv[1:]])


def environment() -> dict[str, Any]:
    return {
        "platform": platform.platform(),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "python": platform.python_version(),
        "packages": {p: _version(p) for p in PACKAGES},
        "torch_threads": torch.get_num_threads(),
        "command": command_line(),
        "python_executable": sys.executable,
        "load_average_start": load_average(),
    }
