"""`sarm-client`: health, model info and a video's progress curve from the command line.

    sarm-client --target HOST:PORT health
    sarm-client --target HOST:PORT info [--json]
    sarm-client --target HOST:PORT score-video FILE --instruction TEXT [--fps F] [--json]

Errors print one line on stderr and exit 1; `health` also exits 1 when the server is not SERVING.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from sarm_client import video
from sarm_client.client import SarmClient
from sarm_client.config import TLS, Timeout
from sarm_client.errors import SarmError
from sarm_client.models import FrameScore, ScoringOptions, ServingStatus

DEFAULT_TARGET = "localhost:50051"  # `make serve`
TOKEN_ENV = "SARM_TOKEN"  # read when --token is not given, so the token stays out of `ps` and shell history


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sarm-client", description="Client of the SARM reward service.")
    parser.add_argument("--target", default=DEFAULT_TARGET, help=f"gateway HOST:PORT (default {DEFAULT_TARGET})")
    parser.add_argument("--token", default=os.environ.get(TOKEN_ENV),
                        help=f"bearer token sent with every call (default: ${TOKEN_ENV})")
    parser.add_argument("--tls", action="store_true", help="use TLS, verifying the server with the system's roots")
    parser.add_argument("--tls-ca", metavar="FILE", help="use TLS, verifying the server with this PEM CA file")
    parser.add_argument("--tls-cert", metavar="FILE", help="use TLS with this PEM client certificate (mutual TLS)")
    parser.add_argument("--tls-key", metavar="FILE", help="the private key (PEM) of --tls-cert")
    parser.add_argument("--timeout", type=float, default=None, metavar="S",
                        help="deadline in seconds of each call, and of a whole score-video (default 10 s per call)")
    commands = parser.add_subparsers(dest="command", required=True)
    health = commands.add_parser("health", help="the server's health status (exit 0 only when SERVING)")
    health.add_argument("--service", default="", help="a service name, e.g. sarm.v1.RewardService (default: all)")
    info = commands.add_parser("info", help="the served model: stages, tasks, window, image size, encoders")
    info.add_argument("--json", action="store_true", help="print JSON")
    score = commands.add_parser("score-video", help="the per-frame stage/progress curve of a video file")
    score.add_argument("file")
    score.add_argument("--instruction", required=True, help="the task instruction")
    score.add_argument("--fps", type=float, default=None, help="frame rate (default: the file's)")
    score.add_argument("--score-every", type=int, default=1, metavar="N", help="score every N-th frame")
    score.add_argument("--smoothing", action="store_true", help="add confidence-weighted smoothed progress")
    score.add_argument("--json", action="store_true", help="print JSON instead of a table")
    return parser


def _client(args: argparse.Namespace) -> SarmClient:
    files = (args.tls_ca, args.tls_cert, args.tls_key)
    tls: TLS | bool = TLS.from_files(*files) if any(files) else args.tls
    timeout = Timeout() if args.timeout is None else Timeout(call=args.timeout, episode=args.timeout)
    return SarmClient(args.target, token=args.token, tls=tls, timeout=timeout)


def _frame_row(frame: FrameScore, fps: float) -> dict[str, Any]:
    return {"frame_index": frame.frame_index, "time_s": frame.frame_index / fps, **dataclasses.asdict(frame.score),
            "smoothed_progress": frame.smoothed_progress}


def _print_table(rows: list[dict[str, Any]]) -> None:
    smoothed = any(row["smoothed_progress"] is not None for row in rows)
    print(f"{'frame':>6} {'time_s':>8} {'stage':<16} {'tau':>6} {'progress':>8} {'confidence':>10}"
          + (f" {'smoothed':>8}" if smoothed else ""))
    for row in rows:
        print(f"{row['frame_index']:>6} {row['time_s']:>8.3f} {row['stage_name']:<16} {row['tau']:>6.3f} "
              f"{row['progress']:>8.3f} {row['confidence']:>10.3f}"
              + (f" {row['smoothed_progress']:>8.3f}" if smoothed else ""))


@contextmanager
def _progress(enabled: bool) -> Iterator[video.Progress | None]:
    """A progress bar on stderr when rich is installed and stderr is a terminal (rich is not a dependency)."""
    try:
        from rich.progress import Progress as Bar
    except ImportError:
        enabled = False
    if not enabled or not sys.stderr.isatty():
        yield None
        return
    with Bar(transient=True) as bar:
        task = bar.add_task("scoring", total=None)
        yield lambda done, total: bar.update(task, completed=done, total=total)


def _score_video(client: SarmClient, args: argparse.Namespace) -> int:
    options = ScoringOptions(score_every=args.score_every, smoothing=args.smoothing)
    info = client.info()
    fps = video.frame_rate(args.file) if args.fps is None else args.fps
    with _progress(not args.json) as on_progress:
        scores = client.score_video(args.file, args.instruction, fps=fps, options=options, on_progress=on_progress)
    rows = [_frame_row(s, fps) for s in scores]
    if args.json:
        print(json.dumps({"file": args.file, "instruction": args.instruction, "fps": fps,
                          "model_version": info.model_version, "stage_names": info.stage_names, "frames": rows}))
    else:
        _print_table(rows)
    return 0


def _run(args: argparse.Namespace) -> int:
    with _client(args) as client:
        if args.command == "health":
            status = client.health(args.service)
            print(status.name)
            return 0 if status is ServingStatus.SERVING else 1
        if args.command == "info":
            info = client.info()
            if args.json:
                print(json.dumps(dataclasses.asdict(info)))
            else:
                height, width = info.image_size
                print(f"model {info.model_version} on {info.backend}: stages {', '.join(info.stage_names)}; "
                      f"{info.num_cameras} camera(s) at {height}x{width}; window of {info.window.frames} frames "
                      f"{info.window.stride_seconds} s apart")
                for task in info.tasks:
                    print(f"  task {task.instruction!r}: {', '.join(task.stage_names)}")
            return 0
        return _score_video(client, args)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return _run(args)
    except SarmError as error:
        what = error.code.name if error.code is not None else type(error).__name__
        message = f"{what}: {error}"
    except (OSError, ImportError, ValueError) as error:  # unreadable files, no PyAV, bad arguments
        message = str(error)
    print(f"sarm-client: error: {' '.join(message.split())}", file=sys.stderr)
    return 1
