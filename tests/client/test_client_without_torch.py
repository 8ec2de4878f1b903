"""The client's own tests pass where only sarm-client is installed: with torch, the core, the gateway and the heavy
libraries unimportable (SARM_TESTS_WITHOUT, see tests/conftest.py), tests/client still collects and passes, leaving
out only the tests that start a gateway or use the core (tests/client/conftest.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.client.conftest import NEED_THE_SERVICE

ROOT = Path(__file__).resolve().parents[2]
WITHOUT = "torch,sarm,sarm_gateway,onnxruntime,tritonclient,PIL,av,pyarrow,redis"


def test_the_client_suite_runs_without_torch_the_core_or_the_gateway() -> None:
    here = Path(__file__).name
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "tests/client",
            "--deselect",
            f"tests/client/{here}",
            "--deselect",
            "tests/client/test_client_package.py",
        ],
        cwd=ROOT,
        env={**os.environ, "SARM_TESTS_WITHOUT": WITHOUT},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert " passed" in result.stdout and "error" not in result.stdout.lower()
    collected = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", "tests/client"],
        cwd=ROOT,
        env={**os.environ, "SARM_TESTS_WITHOUT": WITHOUT},
        capture_output=True,
        text=True,
        timeout=300,
    ).stdout
    assert "test_client_unit.py" in collected
    assert not any(name in collected for name in NEED_THE_SERVICE)
