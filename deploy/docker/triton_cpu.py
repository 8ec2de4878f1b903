"""Triton on CPU in a container: the real tritonserver of nvidia-pytriton on a python-backend model repository.

`python -m sarm.triton.server` binds loopback only (right for tests and `make triton`); another container (the
gateway, Prometheus) needs the server on every interface. This builds the same command line with
`sarm.triton.server`, rebinds its three endpoints and replaces itself with tritonserver, so the server is the
container's main process and gets SIGTERM directly (it drains for --exit-timeout seconds).

    python triton_cpu.py --model-repository /opt/sarm/model_repo [--address 0.0.0.0] [--grpc-port 8001] ...
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from sarm.triton.server import prepare_backend_directory, tritonserver_command, tritonserver_env

ENDPOINTS = ("--grpc-address=", "--http-address=", "--metrics-address=")


def rebind(command: Sequence[str], address: str) -> list[str]:
    """`command` with every endpoint address set to `address`; refuses a command that lacks one of them."""
    out = [next((flag + address for flag in ENDPOINTS if arg.startswith(flag)), arg) for arg in command]
    missing = [flag for flag in ENDPOINTS if not any(arg.startswith(flag) for arg in command)]
    if missing:
        raise SystemExit(f"tritonserver command has no {', '.join(missing)}: cannot rebind it to {address}")
    return out


def build_command(args: argparse.Namespace) -> list[str]:
    # Kept for the life of the server (it execs): symlinks to the wheel's python backend and the stub.
    backends = prepare_backend_directory(Path(tempfile.mkdtemp(prefix="sarm-triton-")) / "backends")
    command = tritonserver_command(
        args.model_repository,
        backend_directory=backends,
        grpc_port=args.grpc_port,
        http_port=args.http_port,
        metrics_port=args.metrics_port,
        exit_timeout_s=args.exit_timeout,
        log_verbose=args.log_verbose,
    )
    return rebind(command, args.address)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-repository", type=Path, required=True)
    parser.add_argument("--address", default="0.0.0.0", help="interface for all three endpoints")
    parser.add_argument("--grpc-port", type=int, default=8001)
    parser.add_argument("--http-port", type=int, default=8000)
    parser.add_argument("--metrics-port", type=int, default=8002)
    parser.add_argument("--exit-timeout", type=int, default=10, help="seconds to drain requests on SIGTERM")
    parser.add_argument("--log-verbose", type=int, default=0)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    if not (args.model_repository / "sarm_manifest.json").is_file():
        raise SystemExit(f"{args.model_repository} is not a SARM model repository (no sarm_manifest.json)")
    command = build_command(args)
    print(" ".join(command), file=sys.stderr, flush=True)
    os.execve(command[0], command, tritonserver_env())


if __name__ == "__main__":
    main()
