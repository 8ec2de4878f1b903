"""`sarm-client`: health, model info and a video's progress curve from the command line (gRPC), and a dataset's
RA-BC weights (the HTTP jobs API).

    sarm-client --target HOST:PORT health
    sarm-client --target HOST:PORT info [--json]
    sarm-client --target HOST:PORT score-video FILE --instruction TEXT [--fps F] [--json]
    sarm-client --target HOST:PORT evaluate VIDEO... --instruction TEXT [--threshold P] [--json] [--out DIR]
    sarm-client rabc --http URL DATASET --chunk-size N [--kappa K] [--stride S] [--stats global|running] --out FILE

Errors print one line on stderr and exit 1; `health` also exits 1 when the server is not SERVING, `evaluate` when
a video could not be scored (after reporting every video).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sarm_client import evaluate, plot, video
from sarm_client.client import SarmClient
from sarm_client.config import TLS, Timeout
from sarm_client.errors import SarmError
from sarm_client.models import FrameScore, ScoringOptions, ServingStatus
from sarm_client.rabc import RabcJob, RabcJobs

DEFAULT_TARGET = "localhost:50051"  # `make serve`
TOKEN_ENV = "SARM_TOKEN"  # read when --token is not given, so the token stays out of `ps` and shell history


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sarm-client", description="Client of the SARM reward service.")
    parser.add_argument("--target", default=DEFAULT_TARGET, help=f"gateway HOST:PORT (default {DEFAULT_TARGET})")
    parser.add_argument(
        "--token", default=os.environ.get(TOKEN_ENV), help=f"bearer token sent with every call (default: ${TOKEN_ENV})"
    )
    parser.add_argument("--tls", action="store_true", help="use TLS, verifying the server with the system's roots")
    parser.add_argument(
        "--tls-ca",
        metavar="FILE",
        help="use TLS, verifying the server with this PEM CA file (rabc: of an https:// URL)",
    )
    parser.add_argument("--tls-cert", metavar="FILE", help="use TLS with this PEM client certificate (mutual TLS)")
    parser.add_argument("--tls-key", metavar="FILE", help="the private key (PEM) of --tls-cert")
    parser.add_argument(
        "--timeout",
        type=float,
        default=None,
        metavar="S",
        help="deadline in seconds of each call, and of a whole score-video (default 10 s per call)",
    )
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
    score.add_argument(
        "--smoothing",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="add smoothed progress, a causal filter's (default: on)",
    )
    score.add_argument(
        "--smoothing-filter", choices=("one-euro", "history"), default="one-euro", help="the filter (default one-euro)"
    )
    score.add_argument("--json", action="store_true", help="print JSON instead of a table")
    _evaluate_parser(commands)
    rabc = commands.add_parser("rabc", help="RA-BC weights of a dataset, computed by the service (a job over HTTP)")
    rabc.add_argument("dataset", help="the dataset folder, relative to the server's SARM_DATA_ROOT")
    rabc.add_argument("--http", required=True, metavar="URL", help="the gateway's HTTP API, e.g. http://HOST:8000")
    rabc.add_argument("--chunk-size", type=int, required=True, metavar="N", help="the policy's action chunk (frames)")
    rabc.add_argument("--kappa", type=float, default=0.01, metavar="K", help="gains above it weigh 1 (default 0.01)")
    rabc.add_argument("--eps", type=float, default=1e-6, help="ε of the soft weight (default 1e-6)")
    rabc.add_argument("--stats", choices=("global", "running"), default="global", help="μ, σ of the gains")
    rabc.add_argument("--stride", type=int, default=1, metavar="S", help="score every S-th frame, interpolate between")
    rabc.add_argument("--poll", type=float, default=1.0, metavar="S", help="seconds between status polls")
    rabc.add_argument("--out", required=True, metavar="FILE", help="where to write rabc_weights.parquet")
    return parser


def _evaluate_parser(commands: Any) -> None:
    evaluation = commands.add_parser("evaluate", help="score policy rollout videos: progress, stage, success each")
    evaluation.add_argument("videos", nargs="+", metavar="VIDEO", help="rollout videos of one task (one camera)")
    evaluation.add_argument("--instruction", required=True, help="the task instruction")
    evaluation.add_argument(
        "--threshold",
        type=float,
        default=evaluate.DEFAULT_THRESHOLD,
        metavar="P",
        help=f"final progress for predicted success (default {evaluate.DEFAULT_THRESHOLD})",
    )
    evaluation.add_argument("--fps", type=float, default=None, help="frame rate (default: each file's)")
    evaluation.add_argument(
        "--concurrency",
        type=int,
        default=evaluate.DEFAULT_CONCURRENCY,
        metavar="N",
        help=f"videos scored at once (default {evaluate.DEFAULT_CONCURRENCY})",
    )
    evaluation.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    evaluation.add_argument("--out", metavar="DIR", help="write summary.json, summary.csv and curves.png there")


def _connection(args: argparse.Namespace) -> tuple[TLS | bool, Timeout]:
    files = (args.tls_ca, args.tls_cert, args.tls_key)
    tls: TLS | bool = TLS.from_files(*files) if any(files) else args.tls
    return tls, Timeout() if args.timeout is None else Timeout(call=args.timeout, episode=args.timeout)


def _client(args: argparse.Namespace) -> SarmClient:
    tls, timeout = _connection(args)
    return SarmClient(args.target, token=args.token, tls=tls, timeout=timeout)


def _frame_row(frame: FrameScore, fps: float) -> dict[str, Any]:
    return {
        "frame_index": frame.frame_index,
        "time_s": frame.frame_index / fps,
        **dataclasses.asdict(frame.score),
        "smoothed_progress": frame.smoothed_progress,
    }


def _print_table(rows: list[dict[str, Any]]) -> None:
    smoothed = any(row["smoothed_progress"] is not None for row in rows)
    print(
        f"{'frame':>6} {'time_s':>8} {'stage':<16} {'tau':>6} {'progress':>8} {'confidence':>10}"
        + (f" {'smoothed':>8}" if smoothed else "")
    )
    for row in rows:
        print(
            f"{row['frame_index']:>6} {row['time_s']:>8.3f} {row['stage_name']:<16} {row['tau']:>6.3f} "
            f"{row['progress']:>8.3f} {row['confidence']:>10.3f}"
            + (f" {row['smoothed_progress']:>8.3f}" if smoothed else "")
        )


@contextmanager
def _progress(enabled: bool, what: str) -> Iterator[Callable[[int, int | None], None] | None]:
    """A progress bar (done, total) on stderr when rich is installed and stderr is a terminal (rich is not a
    dependency)."""
    try:
        from rich.progress import Progress as Bar
    except ImportError:
        enabled = False
    if not enabled or not sys.stderr.isatty():
        yield None
        return
    with Bar(transient=True) as bar:
        task = bar.add_task(what, total=None)
        yield lambda done, total: bar.update(task, completed=done, total=total)


def _score_video(client: SarmClient, args: argparse.Namespace) -> int:
    options = ScoringOptions(
        score_every=args.score_every, smoothing=args.smoothing, smoothing_filter=args.smoothing_filter
    )
    info = client.info()
    fps = video.frame_rate(args.file) if args.fps is None else args.fps
    with _progress(not args.json, "scoring") as on_progress:
        scores = client.score_video(args.file, args.instruction, fps=fps, options=options, on_progress=on_progress)
    rows = [_frame_row(s, fps) for s in scores]
    if args.json:
        print(
            json.dumps(
                {
                    "file": args.file,
                    "instruction": args.instruction,
                    "fps": fps,
                    "model_version": info.model_version,
                    "stage_names": info.stage_names,
                    "frames": rows,
                }
            )
        )
    else:
        _print_table(rows)
    return 0


def _print_evaluation(result: evaluate.Evaluation) -> None:
    """A rich table when rich is installed (it is not a dependency), else plain columns."""
    names = _short_names([e.video for e in result.episodes])
    rows = [
        (
            name,
            str(e.frames),
            _number(e.final_progress),
            _number(e.max_progress),
            e.furthest_stage,
            ("yes" if e.success else "no") if e.error is None else f"error: {e.error}",
        )
        for name, e in zip(names, result.episodes, strict=True)
    ]
    header = ("video", "frames", "final progress", "max progress", "furthest stage", "success")
    summary = result.summary()
    rate = "n/a" if summary["success_rate"] is None else f"{summary['success_rate']:.1%}"
    footer = (
        f"{summary['succeeded']}/{summary['scored']} predicted successful ({rate}) at final progress >= "
        f"{result.threshold:g}; stages {' > '.join(result.task_stages)}; model {result.model_version}"
        + (f"; {summary['errors']} video(s) not scored" if summary["errors"] else "")
    )
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        for row in (header, *rows):
            print("  ".join(f"{cell:<14}" if i else cell for i, cell in enumerate(row)))
        print(footer)
        return
    table = Table(*header, title=result.instruction, caption=footer)
    table.columns[0].overflow = "fold"  # a path is worth wrapping, never cutting
    for row in rows:
        table.add_row(*row)
    Console().print(table)


def _short_names(videos: list[str]) -> list[str]:
    """The videos' paths relative to the folder they share (the JSON and summaries keep them whole)."""
    parents = [os.path.dirname(os.path.abspath(v)) for v in videos]
    common = os.path.commonpath(parents)
    return [os.path.relpath(os.path.abspath(v), common) for v in videos]


def _number(value: float) -> str:
    return "-" if value != value else f"{value:.3f}"  # NaN: not scored


def _evaluate(args: argparse.Namespace) -> int:
    tls, timeout = _connection(args)
    plotting = args.out is not None and plot.available()
    if args.out is not None and not plotting:
        print("sarm-client: curves.png skipped: it needs matplotlib (pip install 'sarm-client[plot]')", file=sys.stderr)
    with _progress(not args.json, "videos") as on_progress:
        result = evaluate.evaluate_videos(
            args.target,
            args.videos,
            args.instruction,
            threshold=args.threshold,
            fps=args.fps,
            concurrency=args.concurrency,
            token=args.token,
            tls=tls,
            timeout=timeout,
            on_progress=on_progress,
        )
    if args.out is not None:
        written = result.write(Path(args.out), plot=plotting)
        print(f"wrote {', '.join(map(str, written))}", file=sys.stderr)
    if args.json:
        print(json.dumps(result.to_json()))
    else:
        _print_evaluation(result)
    return 1 if result.summary()["errors"] else 0


def _job_progress(bar: Callable[[int, int | None], None] | None) -> Callable[[RabcJob], None]:
    """The bar, or else a line on stderr per change: a log of a batch job shows how far the job got."""

    def report(job: RabcJob) -> None:
        if bar is not None:
            bar(job.episodes_done, job.episodes_total)
        else:
            print(
                f"RA-BC job {job.id}: {job.state}, {job.episodes_done}/{job.episodes_total or '?'} episodes",
                file=sys.stderr,
                flush=True,
            )

    return report


def _rabc(args: argparse.Namespace) -> int:
    jobs = RabcJobs(
        args.http,
        token=args.token,
        timeout=Timeout() if args.timeout is None else Timeout(args.timeout),
        ca_file=args.tls_ca,
    )
    with _progress(True, "RA-BC episodes") as bar:
        job, weights = jobs.compute(
            args.dataset,
            args.chunk_size,
            kappa=args.kappa,
            stride=args.stride,
            stats=args.stats,
            eps=args.eps,
            poll_s=args.poll,
            on_progress=_job_progress(bar),
        )
    Path(args.out).write_bytes(weights)
    summary = job.summary
    assert summary is not None  # the server's, on every succeeded job
    print(
        f"{summary['frames']} frames of {len(summary['episode_mean_weights'])} episodes: mean weight "
        f"{summary['mean_weight']:.3f}, {summary['zero_weight_share']:.1%} zero; gain mean "
        f"{summary['delta_mean']:.4f} std {summary['delta_std']:.4f} (mu {summary['mu']:.4f}, sigma "
        f"{summary['sigma']:.4f}) -> {args.out}"
    )
    return 0


def _run(args: argparse.Namespace) -> int:
    if args.command == "rabc":  # HTTP: no gRPC channel
        return _rabc(args)
    if args.command == "evaluate":  # its own asyncio client: many videos at once
        return _evaluate(args)
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
                print(
                    f"model {info.model_version} on {info.backend}: stages {', '.join(info.stage_names)}; "
                    f"{info.num_cameras} camera(s) at {height}x{width}; window of {info.window.frames} frames "
                    f"{info.window.stride_seconds} s apart"
                )
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
    except KeyboardInterrupt:  # a `rabc` job has been cancelled on the way out: say so, not a traceback
        print("sarm-client: interrupted", file=sys.stderr)
        return 130
    print(f"sarm-client: error: {' '.join(message.split())}", file=sys.stderr)
    return 1
