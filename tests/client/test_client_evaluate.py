"""Policy evaluation (`sarm_client.evaluate`, `sarm-client evaluate`): the verdict rules on their own, then many
rollout videos scored at once on a real gateway (tests/gateway_harness.py) exactly as score_video scores each,
within the server's stream bound, with summaries written; and the command's JSON interface, run as the installed
console script."""

from __future__ import annotations

import csv
import json
import math
import os
import statistics
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from sarm.encoders.base import TextEncoder
from sarm_client import Encoder, ModelInfo, SarmClient, Task, Timeout, Unavailable, Window
from sarm_client.evaluate import (
    FINAL_FRAMES,
    EpisodeResult,
    Evaluation,
    evaluate_videos,
    final_progress,
    furthest_stage,
    task_stages,
)
from tests.client_harness import target, write_video
from tests.gateway_harness import INSTRUCTION, TIMEOUT, RunningGateway, episode_frames, free_port

FPS = 4
CLIENT_TIMEOUT = Timeout(call=TIMEOUT, step=TIMEOUT, episode=TIMEOUT)
SCRIPT = Path(sys.executable).with_name("sarm-client")  # the console script `make setup` installs


# ---- the verdict rules --------------------------------------------------------------------------------------------


def test_the_final_progress_is_the_median_of_the_last_frames() -> None:
    assert FINAL_FRAMES == 5
    assert final_progress([0.1, 0.2, 0.9, 0.95, 0.05, 0.9, 0.92]) == pytest.approx(0.9)  # a last-frame blip: ignored
    assert final_progress([0.3, 0.5]) == pytest.approx(0.4)


def test_the_furthest_stage_is_the_latest_held_for_a_few_frames() -> None:
    order = ("reach", "grasp", "lift", "place")
    held = ["reach"] * 4 + ["grasp"] * 3 + ["place"] + ["lift"] * 5 + ["reach"] * 3
    assert furthest_stage(held, order) == "lift"  # one "place" frame is a blip; a later "reach" does not undo lift
    assert furthest_stage(["reach", "grasp"], order) == "grasp"  # shorter than the run needed: any frame counts


def test_the_instructions_stages_come_from_its_task() -> None:
    info = ModelInfo(
        "v",
        ("reach", "grasp", "lift", "insert"),
        (Task("Insert the peg.", ("reach", "insert"), (0.5, 0.5)),),
        Window(9, 1.0, 4, 13),
        1,
        (8, 8),
        Encoder("f", "1", 4),
        Encoder("t", "1", 4),
        "",
    )
    assert task_stages(info, " insert the peg. ") == ("reach", "insert")
    assert task_stages(info, "stack the cubes") == info.stage_names  # unknown: the model's own list


def test_summaries_are_written_as_json_csv_and_png(tmp_path: Path) -> None:
    episodes = (
        EpisodeResult("a.mp4", 3, 4.0, 0.9, 0.95, "lift", True, (0.1, 0.95, 0.9), ("reach", "lift", "lift")),
        EpisodeResult("missing.mp4", error="NotFound: no such file"),
    )
    evaluation = Evaluation(INSTRUCTION, 0.5, "v1", ("reach", "grasp", "lift"), episodes)
    written = evaluation.write(tmp_path / "out")
    assert [p.name for p in written] == ["summary.json", "summary.csv", "curves.png"]
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["episodes"][0]["progress"] == [0.1, 0.95, 0.9] and summary["episodes"][1]["final_progress"] is None
    assert summary["summary"] == {
        "episodes": 2,
        "scored": 1,
        "errors": 1,
        "succeeded": 1,
        "success_rate": 1.0,
        "mean_final_progress": 0.9,
    }
    rows = list(csv.DictReader((tmp_path / "out" / "summary.csv").open()))
    assert rows[0]["video"] == "a.mp4" and rows[0]["success"] == "True" and rows[1]["error"].startswith("NotFound")
    assert (tmp_path / "out" / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ---- many videos on a real gateway --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    folder = tmp_path_factory.mktemp("rollouts")
    return [
        write_video(folder / f"rollout_{i}.mp4", episode_frames(n, seed=80 + i), fps=FPS)
        for i, n in enumerate((9, 14, 6, 11, 17))
    ]


def test_every_video_is_scored_as_score_video_scores_it(served: RunningGateway, videos: list[Path]) -> None:
    done: list[tuple[int, int]] = []
    evaluation = evaluate_videos(
        target(served),
        videos,
        INSTRUCTION,
        concurrency=3,
        timeout=CLIENT_TIMEOUT,
        on_progress=lambda *counts: done.append(counts),
    )
    assert done[-1] == (5, 5) and len(done) == 5
    assert evaluation.task_stages == ("reach", "grasp", "lift") and evaluation.model_version
    with SarmClient(target(served), timeout=CLIENT_TIMEOUT) as client:
        for path, episode in zip(videos, evaluation.episodes, strict=True):  # in the order given
            curve = [s.score.progress for s in client.score_video(path, INSTRUCTION)]
            assert episode.video == str(path) and episode.error is None and episode.frames == len(curve)
            np.testing.assert_allclose(episode.curve, curve, atol=1e-6)
            assert episode.final_progress == pytest.approx(statistics.median(curve[-5:]), abs=1e-6)
            assert episode.max_progress == pytest.approx(max(curve), abs=1e-6)
            assert episode.success == (episode.final_progress >= 0.5) and episode.fps == FPS
            assert episode.furthest_stage in evaluation.task_stages


def test_more_videos_than_the_server_takes_at_once_wait_their_turn(
    cpu_model_repo: Path, text_encoder: TextEncoder, videos: list[Path]
) -> None:
    running = RunningGateway(cpu_model_repo, text_encoder, max_streams=1)
    try:
        # Four at once against a bound of one stream: refusals (RESOURCE_EXHAUSTED, retry after 100 ms) are
        # waited out, and every video is scored in the end.
        evaluation = evaluate_videos(target(running), videos, INSTRUCTION, concurrency=4, timeout=CLIENT_TIMEOUT)
        assert all(e.error is None for e in evaluation.episodes), [e.error for e in evaluation.episodes]
        with SarmClient(target(running), timeout=CLIENT_TIMEOUT) as client:
            curve = [s.score.progress for s in client.score_video(videos[1], INSTRUCTION)]
        np.testing.assert_allclose(evaluation.episodes[1].curve, curve, atol=1e-6)
    finally:
        running.close()


def test_a_video_that_cannot_be_scored_is_reported_and_the_rest_still_are(
    served: RunningGateway, videos: list[Path], tmp_path: Path
) -> None:
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video")
    paths = [videos[0], tmp_path / "missing.mp4", broken]
    evaluation = evaluate_videos(target(served), paths, INSTRUCTION, timeout=CLIENT_TIMEOUT)
    good, missing, unreadable = evaluation.episodes
    assert good.error is None and not math.isnan(good.final_progress)
    assert missing.error is not None and "missing.mp4" in missing.error and not missing.success
    assert unreadable.error is not None and "broken.mp4: cannot read" in unreadable.error
    assert evaluation.summary()["errors"] == 2


def test_a_gateway_that_is_down_is_one_clear_error(videos: list[Path]) -> None:
    with pytest.raises(Unavailable):
        evaluate_videos(f"127.0.0.1:{free_port()}", videos, INSTRUCTION, timeout=Timeout(call=2.0))


# ---- the command ---------------------------------------------------------------------------------------------------


def sarm_client(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**{k: v for k, v in os.environ.items() if k != "SARM_TOKEN"}, "COLUMNS": "250"}  # rich: no wrapping
    return subprocess.run([str(SCRIPT), *args], env=env, capture_output=True, text=True, timeout=5 * TIMEOUT)


@pytest.fixture
def script() -> Iterator[Path]:
    if not SCRIPT.exists():
        pytest.skip(f"the console script is not installed at {SCRIPT} (make setup)")
    yield SCRIPT


def test_evaluate_prints_one_json_object_with_the_episodes(
    script: Path, served: RunningGateway, videos: list[Path], tmp_path: Path
) -> None:
    result = sarm_client(
        "--target",
        target(served),
        "evaluate",
        *map(str, videos[:3]),
        "--instruction",
        INSTRUCTION,
        "--json",
        "--out",
        str(tmp_path / "eval"),
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)  # one object, nothing else on stdout
    assert [e["video"] for e in report["episodes"]] == [str(v) for v in videos[:3]]
    for episode in report["episodes"]:
        assert isinstance(episode["final_progress"], float) and isinstance(episode["success"], bool)
        assert episode["success"] == (episode["final_progress"] >= report["threshold"])
    assert {p.name for p in (tmp_path / "eval").iterdir()} == {"summary.json", "summary.csv", "curves.png"}


def test_evaluate_prints_a_table_and_fails_on_unscored_videos(
    script: Path, served: RunningGateway, videos: list[Path], tmp_path: Path
) -> None:
    table = sarm_client(
        "--target",
        target(served),
        "evaluate",
        str(videos[0]),
        str(tmp_path / "gone.mp4"),
        "--instruction",
        INSTRUCTION,
        "--threshold",
        "0.01",
    )
    assert table.returncode == 1  # every video is reported, and the command says not all were scored
    assert "rollout_0.mp4" in table.stdout and "yes" in table.stdout and "gone.mp4" in table.stdout
    assert "1/1 predicted successful" in table.stdout and "1 video(s) not scored" in table.stdout
    down = sarm_client(
        "--target",
        f"127.0.0.1:{free_port()}",
        "--timeout",
        "2",
        "evaluate",
        str(videos[0]),
        "--instruction",
        INSTRUCTION,
    )
    assert down.returncode == 1 and down.stdout == ""
    assert down.stderr.startswith("sarm-client: error: UNAVAILABLE") and len(down.stderr.splitlines()) == 1
