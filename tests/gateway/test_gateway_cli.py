"""`sarm serve`: refusals with a message (no traceback), and a real process that drains and exits on SIGTERM."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from typer.testing import CliRunner

from sarm.cli import app

ROOT = Path(__file__).resolve().parents[2]
runner = CliRunner()


def test_serve_refuses_a_directory_that_is_not_a_model_repository(tmp_path: Path) -> None:
    result = runner.invoke(app, ["serve", "--model-repo", str(tmp_path), "--grpc-port", "0"])
    assert result.exit_code == 2 and "sarm_manifest.json is missing" in result.output


def test_serve_refuses_an_unknown_backend(cpu_model_repo: Path) -> None:
    result = runner.invoke(app, ["serve", "--model-repo", str(cpu_model_repo), "--backend", "tensorflow"])
    assert result.exit_code == 2 and "backend" in result.output and "'local' or 'triton'" in result.output


def test_serve_refuses_a_busy_http_port(cpu_model_repo: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = runner.invoke(
            app,
            ["serve", "--model-repo", str(cpu_model_repo), "--grpc-port", "0", "--http-port", str(port)],
            env={"SARM_HTTP_HOST": "127.0.0.1"},
        )
    assert result.exit_code == 2 and f"cannot listen for HTTP on 127.0.0.1:{port}" in result.output


@pytest.mark.timeout(120)
def test_serve_process_runs_both_front_ends_and_stops_cleanly_on_sigterm(cpu_model_repo: Path) -> None:
    env = {
        **os.environ,
        "SARM_GRPC_HOST": "127.0.0.1",
        "SARM_HTTP_HOST": "127.0.0.1",
        "SARM_DRAIN_SECONDS": "2",
        "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "service")]),
    }
    process = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from sarm.cli import app; app()",
            "serve",
            "--model-repo",
            str(cpu_model_repo),
            "--grpc-port",
            "0",
            "--http-port",
            "0",
        ],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stderr is not None
        output = ""
        while not (match := re.search(r"on gRPC 127\.0\.0\.1:(\d+), HTTP API 127\.0\.0\.1:(\d+)", output)):
            line = process.stderr.readline()  # until the server listens; "" once the process has exited
            assert line, f"sarm serve exited with {process.wait()}: {output}"
            output += line
        with grpc.insecure_channel(f"127.0.0.1:{match.group(1)}") as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
        assert httpx.get(f"http://127.0.0.1:{match.group(2)}/readyz", timeout=10).status_code == 200
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
