"""`sarm rabc` on a SARM trained by LeRobot and imported with `sarm import lerobot`: the interface external checks
call, against LeRobot's own sarm_progress.parquet (../shared/fixtures, made by LeRobot 0.6.1 with stride 8)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from sarm.cli import app
from sarm.manifest import read_manifest
from sarm.rabc.files import read_progress

FIXTURES = Path(__file__).resolve().parents[3] / "shared" / "fixtures"
STRIDE = 8
runner = CliRunner()


def copied(name: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    source = FIXTURES / name
    if not source.is_dir():
        pytest.skip(f"the shared fixture {source} is missing (run from a checkout beside ../shared)")
    target = tmp_path_factory.mktemp(name) / name
    shutil.copytree(source, target)  # tests never write into shared/
    return target


@pytest.fixture(scope="module")
def aloha(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return copied("lerobot_aloha_insertion", tmp_path_factory)


@pytest.mark.parametrize(
    ("golden_name", "heads"),
    [("lerobot_sarm_insertion", ("sparse", "dense")), ("lerobot_sarm_insertion_single", ("sparse",))],
)
def test_sarm_rabc_on_an_imported_checkpoint_gives_lerobots_progress(
    golden_name: str,
    heads: tuple[str, ...],
    aloha: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    golden = copied(golden_name, tmp_path_factory)
    work = tmp_path_factory.mktemp("work")
    ckpt, out = work / "ckpt", work / "out"
    imported = runner.invoke(
        app, ["import", "lerobot", str(golden / "checkpoint"), "--clip", str(golden / "clip"), "--out", str(ckpt)]
    )
    assert imported.exit_code == 0, imported.output
    head = heads[-1]
    result = runner.invoke(
        app,
        [
            "rabc",
            str(aloha),
            "--checkpoint",
            str(ckpt),
            "--chunk-size",
            "10",
            "--stride",
            str(STRIDE),
            "--head",
            head,
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    ours = pq.read_table(out / "sarm_progress.parquet")
    theirs = pq.read_table(golden / "sarm_progress.parquet")
    assert ours.column_names == ["index", "episode_index", "frame_index", *(f"progress_{h}" for h in heads)]
    for key in ("index", "episode_index", "frame_index"):
        np.testing.assert_array_equal(ours.column(key).to_numpy(), theirs.column(key).to_numpy())
    episode, frame = theirs.column("episode_index").to_numpy(), theirs.column("frame_index").to_numpy()
    scored = (frame % STRIDE == 0) | np.r_[episode[1:] != episode[:-1], True]  # LeRobot's model outputs
    for h in heads:
        mine, lerobots = ours.column(f"progress_{h}").to_numpy(), theirs.column(f"progress_{h}").to_numpy()
        assert np.abs(mine[scored] - lerobots[scored]).max() < 1e-3, h
        assert np.abs(mine - lerobots).max() < 1e-3, h  # the interpolation between them is LeRobot's too
    provenance = read_progress(out / "sarm_progress.parquet").provenance
    assert provenance["window"] == {"mode": "centered", "frames": 9, "stride_frames": 30}
    assert provenance["heads"] == list(heads)
    summary = json.loads((out / "rabc_summary.json").read_text())
    assert summary["summary"]["frames"] == len(frame)


def test_a_dense_head_is_refused_and_an_export_served_for_an_imported_single_stage_model(
    aloha: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    golden = copied("lerobot_sarm_insertion_single", tmp_path_factory)
    work = tmp_path_factory.mktemp("work")
    imported = runner.invoke(
        app,
        ["import", "lerobot", str(golden / "checkpoint"), "--clip", str(golden / "clip"), "--out", str(work / "ckpt")],
    )
    assert imported.exit_code == 0, imported.output
    result = runner.invoke(
        app,
        [
            "rabc",
            str(aloha),
            "--checkpoint",
            str(work / "ckpt"),
            "--chunk-size",
            "10",
            "--stride",
            "50",
            "--head",
            "dense",
            "--out",
            str(work / "out"),
        ],
    )
    assert result.exit_code == 2 and "no 'dense' progress" in result.output and "Traceback" not in result.output
    # An imported model exports in float with CLIP's own crop: INT8 and --image-size are refused in one line.
    resized = runner.invoke(app, ["export", str(work / "ckpt"), "--out", str(work / "repo"), "--image-size", "64x64"])
    assert resized.exit_code == 2 and "CLIP crops any frame" in resized.output and "Traceback" not in resized.output
    exported = runner.invoke(app, ["export", str(work / "ckpt"), "--out", str(work / "repo")])
    assert exported.exit_code == 0, exported.output
    assert read_manifest(work / "repo").architecture == "lerobot-sarm"
