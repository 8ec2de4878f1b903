"""RA-BC end to end: per-frame progress of a dataset, the output files, cancellation and the `sarm rabc` CLI."""

from __future__ import annotations

import asyncio
import json
import shutil
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from typer.testing import CliRunner

from sarm.cli import app
from sarm.data.lerobot import LeRobotDataset
from sarm.embeddings import embed_dataset
from sarm.encoders.base import FrameEncoder, TextEncoder
from sarm.encoders.registry import load_frame_encoder
from sarm.model.windows import sequence_indices, stride_frames
from sarm.rabc.files import PROGRESS_FILE, SUMMARY_FILE, WEIGHTS_FILE, read_progress, write_progress
from sarm.rabc.pipeline import run_rabc, weigh
from sarm.rabc.progress import Cancelled, DatasetProgress, EngineHandle, dataset_progress
from sarm.rabc.weights import RabcParams, rabc_weights
from sarm.scoring.curve import scored_frames
from sarm.scoring.engine import Engine
from sarm.scoring.options import EngineOptions
from sarm.scoring.pytorch import score_embeddings
from sarm.scoring.repository import repository_for
from sarm.training.checkpoint import load_checkpoint
from tests.conftest import synthetic_episode, write_dataset
from tests.gateway_harness import CountingBackend

runner = CliRunner()
LENGTHS = (30, 21, 44)  # 10 fps: the window stride is 10 frames
SIZE = (48, 64)  # the checkpoint's camera size: frames reach the encoder as they are


def distinct_frames(ds: LeRobotDataset, episode: int, indices: np.ndarray | None = None) -> int:
    """Frames of an episode (at `indices`) with distinct pixels: what the engine encodes, once each."""
    return len({frame.tobytes() for frame in ds.frames(episode, indices=indices)})


def counting_engine(checkpoint: Path, text_encoder: TextEncoder) -> tuple[EngineHandle, CountingBackend]:
    """The engine `sarm rabc` opens on the checkpoint, with its backend counting what it encodes."""
    loop = asyncio.new_event_loop()
    engine = Engine.open(
        repository_for(checkpoint),
        EngineOptions(frame_cache_entries=0, score_cache_entries=0),
        text_encoder=text_encoder,
    )
    backend = CountingBackend(engine.backend, gated=False)
    engine.backend = backend

    def close() -> None:
        loop.run_until_complete(engine.close())
        loop.close()

    return EngineHandle(engine, loop.run_until_complete, close), backend


@pytest.fixture(scope="module")
def frame_encoder() -> FrameEncoder:
    torch.set_num_threads(1)
    return load_frame_encoder()


@pytest.fixture(scope="module")
def ds_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("rabc") / "dataset"
    return write_dataset(root, [synthetic_episode(n, seed, size=SIZE) for seed, n in enumerate(LENGTHS)]).root


@pytest.fixture(scope="module")
def full(
    ds_root: Path, sarm_checkpoint: Path, frame_encoder: FrameEncoder, text_encoder: TextEncoder
) -> dict[str, Any]:
    """Every frame scored from video, once for the module: the progress, the callback calls, frames encoded."""
    (handle, counting), calls = counting_engine(sarm_checkpoint, text_encoder), []
    try:
        progress = dataset_progress(
            LeRobotDataset(ds_root),
            sarm_checkpoint,
            1,
            on_episode=lambda done, total: calls.append((done, total)),
            engine=handle,
        )
    finally:
        handle.close()
    return {"progress": progress, "calls": calls, "encoded": counting.encoded}


def test_progress_is_the_causal_score_of_every_frame(
    full: dict[str, Any], ds_root: Path, sarm_checkpoint: Path, frame_encoder: FrameEncoder, text_encoder: TextEncoder
) -> None:
    progress: DatasetProgress = full["progress"]
    ds = LeRobotDataset(ds_root)
    assert [e.episode_index for e in progress.episodes] == [0, 1, 2]
    assert [len(e.progress) for e in progress.episodes] == list(LENGTHS)
    model, info = load_checkpoint(sarm_checkpoint)
    direct = score_embeddings(
        model,
        frame_encoder.encode_frames(ds.frames(1)),
        text_encoder.encode([ds.episode(1).task])[0],
        stride_frames(ds.fps),
    )
    np.testing.assert_allclose(progress.episodes[1].progress, direct.progress, atol=1e-5)
    index = ds.frames_table.column("index").to_numpy()
    np.testing.assert_array_equal(np.concatenate([e.index for e in progress.episodes]), index)
    # Each distinct frame once, though up to 9 windows hold it (the moving bar repeats a frame now and then).
    assert full["encoded"] == sum(distinct_frames(ds, e) for e in range(len(LENGTHS))) <= sum(LENGTHS)
    assert full["calls"] == [(0, 3), (1, 3), (2, 3), (3, 3)]
    provenance = progress.provenance
    assert provenance["embeddings"] == "video"
    assert provenance["window"] == {"mode": "causal", "frames": 9, "stride_seconds": 1.0, "stride_frames": 10}
    assert provenance["frame_encoder"] == {"id": info.frame_encoder["id"], "version": info.frame_encoder["version"]}
    assert len(provenance["checkpoint_sha256"]) == 64
    assert (provenance["score_stride"], provenance["interpolation"]) == (1, "none")


def test_stride_scores_every_nth_and_the_last_frame_and_interpolates_between(
    full: dict[str, Any], ds_root: Path, sarm_checkpoint: Path, frame_encoder: FrameEncoder, text_encoder: TextEncoder
) -> None:
    handle, counting = counting_engine(sarm_checkpoint, text_encoder)
    try:
        strided = dataset_progress(LeRobotDataset(ds_root), sarm_checkpoint, 4, engine=handle)
    finally:
        handle.close()
    assert (strided.provenance["score_stride"], strided.provenance["interpolation"]) == (4, "linear")
    np.testing.assert_array_equal(scored_frames(21, 4), [0, 4, 8, 12, 16, 20])
    np.testing.assert_array_equal(scored_frames(30, 4), [0, 4, 8, 12, 16, 20, 24, 28, 29])
    needed = 0
    for every, strided_ep in zip(full["progress"].episodes, strided.episodes, strict=True):
        length = len(every.progress)
        scored = scored_frames(length, 4)
        # Scored frames get exactly the every-frame score: same windows, same embeddings.
        np.testing.assert_allclose(strided_ep.progress[scored], every.progress[scored], atol=1e-6)
        # Frame 2 sits halfway between frames 0 and 4; frame 9 a quarter of the way from 8 to 12.
        p = strided_ep.progress
        assert p[2] == pytest.approx((p[0] + p[4]) / 2, abs=1e-6)
        assert p[9] == pytest.approx(0.75 * p[8] + 0.25 * p[12], abs=1e-6)
        needed += distinct_frames(
            LeRobotDataset(ds_root), every.episode_index, np.unique(sequence_indices(scored, 10).indices)
        )
    # Only frames some scored window reads are encoded (fewer than all of them), each once.
    assert counting.encoded == needed < sum(LENGTHS)


def test_stored_embeddings_give_the_same_progress_without_touching_video(
    full: dict[str, Any],
    ds_root: Path,
    sarm_checkpoint: Path,
    frame_encoder: FrameEncoder,
    text_encoder: TextEncoder,
    tmp_path: Path,
) -> None:
    root = Path(shutil.copytree(ds_root, tmp_path / "embedded"))
    ds = LeRobotDataset(root)
    embed_dataset(ds, frame_encoder, text_encoder)
    shutil.rmtree(root / "videos")  # proof that nothing is decoded
    progress = dataset_progress(LeRobotDataset(root), sarm_checkpoint, 1)
    assert progress.provenance["embeddings"] == "embedding-store"
    for stored, video in zip(progress.episodes, full["progress"].episodes, strict=True):
        np.testing.assert_allclose(stored.progress, video.progress, atol=1e-5)


def test_cancel_stops_between_episodes_and_writes_nothing(ds_root: Path, sarm_checkpoint: Path, tmp_path: Path) -> None:
    calls: list[tuple[int, int]] = []
    with pytest.raises(Cancelled, match="after 1 of 3"):
        run_rabc(
            ds_root,
            sarm_checkpoint,
            RabcParams(5),
            tmp_path / "out",
            stride=100,
            on_episode=lambda done, total: calls.append((done, total)),
            should_stop=lambda: len(calls) > 1,
        )
    assert calls == [(0, 3), (1, 3)]
    assert not (tmp_path / "out").exists()
    stop = threading.Event()
    stop.set()
    with pytest.raises(Cancelled, match="after 0 of 3"):
        dataset_progress(LeRobotDataset(ds_root), sarm_checkpoint, 100, should_stop=stop.is_set)


def test_output_files_follow_lerobots_schema_and_carry_provenance(full: dict[str, Any], tmp_path: Path) -> None:
    progress: DatasetProgress = full["progress"]
    params = RabcParams(chunk_size=5, kappa=0.002, stats="running")
    write_progress(progress, tmp_path)
    summary = weigh(progress, params, tmp_path)

    table = pq.read_table(tmp_path / PROGRESS_FILE)
    expected = [
        ("index", pa.int64()),
        ("episode_index", pa.int64()),
        ("frame_index", pa.int64()),
        ("progress_sparse", pa.float32()),
    ]
    assert [(f.name, f.type) for f in table.schema] == expected
    assert table.num_rows == sum(LENGTHS)
    assert table.column("episode_index").to_pylist() == [e for e, n in enumerate(LENGTHS) for _ in range(n)]
    assert table.column("frame_index").to_pylist() == [f for n in LENGTHS for f in range(n)]
    assert table.column("index").to_pylist() == list(range(sum(LENGTHS)))
    provenance = json.loads(table.schema.metadata[b"sarm.provenance"])
    assert provenance == progress.provenance
    assert {"checkpoint", "checkpoint_sha256", "frame_encoder", "text_encoder", "window", "score_stride"} <= set(
        provenance
    )
    back = read_progress(tmp_path / PROGRESS_FILE)
    for a, b in zip(back.episodes, progress.episodes, strict=True):
        np.testing.assert_array_equal(a.progress, b.progress)
        np.testing.assert_array_equal(a.index, b.index)

    weights = pq.read_table(tmp_path / WEIGHTS_FILE)
    columns = [*expected[:3], ("delta", pa.float32()), ("weight", pa.float32())]
    assert [(f.name, f.type) for f in weights.schema] == columns
    meta = json.loads(weights.schema.metadata[b"sarm.rabc"])
    assert meta["params"] == {"chunk_size": 5, "kappa": 0.002, "eps": 1e-6, "stats": "running"}
    assert meta["mu"] == summary.mu and meta["sigma"] == summary.sigma
    assert meta["progress"] == provenance
    expected_weights = rabc_weights([e.progress for e in progress.episodes], 5, kappa=0.002, stats="running")
    np.testing.assert_allclose(weights.column("weight").to_numpy(), np.concatenate(expected_weights), atol=1e-7)
    np.testing.assert_array_equal(weights.column("index").to_numpy(), table.column("index").to_numpy())

    report = json.loads((tmp_path / SUMMARY_FILE).read_text())
    assert report["params"] == meta["params"]
    assert report["summary"]["mean_weight"] == pytest.approx(float(np.concatenate(expected_weights).mean()))
    assert set(report["summary"]["episode_mean_weights"]) == {"0", "1", "2"}


def test_read_progress_takes_rows_in_any_order_and_refuses_gaps(tmp_path: Path) -> None:
    rows = {
        "index": [12, 10, 11, 3],
        "episode_index": [4, 4, 4, 1],
        "frame_index": [2, 0, 1, 0],
        "progress_sparse": [0.3, 0.1, 0.2, 0.9],
    }
    pq.write_table(pa.table(rows), tmp_path / "a.parquet")  # e.g. written by another tool, no metadata
    progress = read_progress(tmp_path / "a.parquet")
    assert [e.episode_index for e in progress.episodes] == [1, 4]
    np.testing.assert_allclose(progress.episodes[1].progress, [0.1, 0.2, 0.3])
    np.testing.assert_array_equal(progress.episodes[1].index, [10, 11, 12])
    assert progress.provenance == {}
    pq.write_table(pa.table({**rows, "frame_index": [3, 0, 1, 0]}), tmp_path / "gap.parquet")
    with pytest.raises(ValueError, match=r"episode 4 does not hold frames 0\.\.2"):
        read_progress(tmp_path / "gap.parquet")
    pq.write_table(pa.table({k: v for k, v in rows.items() if k != "progress_sparse"}), tmp_path / "b.parquet")
    with pytest.raises(ValueError, match="progress_sparse"):
        read_progress(tmp_path / "b.parquet")


def test_cli_end_to_end(ds_root: Path, sarm_checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = runner.invoke(
        app,
        [
            "rabc",
            str(ds_root),
            "--checkpoint",
            str(sarm_checkpoint),
            "--chunk-size",
            "5",
            "--stride",
            "3",
            "--out",
            str(out),
            "--plot",
        ],
    )
    assert result.exit_code == 0, result.output
    for name in (PROGRESS_FILE, WEIGHTS_FILE, SUMMARY_FILE, "rabc_weights.png"):
        assert (out / name).is_file(), name
    report = json.loads((out / SUMMARY_FILE).read_text())
    weights = pq.read_table(out / WEIGHTS_FILE).column("weight").to_numpy()
    assert report["summary"]["mean_weight"] == pytest.approx(float(weights.mean()), abs=1e-6)
    assert f"{report['summary']['mean_weight']:.3f}" in result.output
    for label in ("mean weight", "zero weights", "δ mean ± std", "lowest episodes", "highest episodes"):
        assert label in result.output
    assert json.loads(pq.read_schema(out / PROGRESS_FILE).metadata[b"sarm.provenance"])["score_stride"] == 3


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"dataset": "missing"}, "does not exist"),
        ({"dataset": "empty"}, "is not a LeRobot dataset"),
        ({"--checkpoint": "missing"}, "does not exist"),
        ({"--checkpoint": "empty"}, "is not a SARM checkpoint"),
        ({"--chunk-size": "0"}, "chunk size must be >= 1"),
        ({"--kappa": "-1"}, "kappa"),
        ({"--stride": "0"}, "stride must be >= 1"),
    ],
)
def test_cli_reports_bad_input_in_one_line(
    change: dict[str, str], message: str, ds_root: Path, sarm_checkpoint: Path, tmp_path: Path
) -> None:
    (tmp_path / "empty").mkdir()
    args = {"dataset": str(ds_root), "--checkpoint": str(sarm_checkpoint), "--chunk-size": "5", "--stride": "1"}
    args |= {k: str(tmp_path / v) if v in ("missing", "empty") else v for k, v in change.items()}
    options = [part for key, value in args.items() if key != "dataset" for part in (key, value)]
    result = runner.invoke(app, ["rabc", args["dataset"], *options, "--out", str(tmp_path / "out")])
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "out").exists()


def test_cli_refuses_an_unknown_statistic(ds_root: Path, sarm_checkpoint: Path, tmp_path: Path) -> None:
    result = runner.invoke(
        app,
        [
            "rabc",
            str(ds_root),
            "--checkpoint",
            str(sarm_checkpoint),
            "--chunk-size",
            "5",
            "--stats",
            "median",
            "--out",
            str(tmp_path),
        ],
    )
    assert result.exit_code == 2
    assert "median" in result.output


def test_an_engine_that_fails_to_open_leaves_no_event_loop_open(
    sarm_checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    loops: list[asyncio.AbstractEventLoop] = []
    new_loop = asyncio.new_event_loop

    def recorded() -> asyncio.AbstractEventLoop:
        loops.append(new_loop())
        return loops[-1]

    def refuse(*args: Any, **kwargs: Any) -> Engine:
        raise RuntimeError("the backend is down")

    monkeypatch.setattr(asyncio, "new_event_loop", recorded)
    monkeypatch.setattr(Engine, "open", refuse)
    with pytest.raises(RuntimeError, match="the backend is down"):
        EngineHandle.open(sarm_checkpoint, EngineOptions())
    assert len(loops) == 1 and loops[0].is_closed()
