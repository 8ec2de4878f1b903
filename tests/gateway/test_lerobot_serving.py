"""An imported LeRobot SARM served like our own models: `sarm export` writes its repository (CLIP image graph, centre
heads with state), and the gateway's ScoreFrames, ScoreWindow and video upload, on ONNX Runtime and on a real
tritonserver, give LeRobot's own `compute_sarm_progress` numbers (progress_sparse and progress_dense, within 1e-3 on
every frame LeRobot scored). A live stream is refused (the window is centred), and so is a frame sequence without the
joint state the model reads."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path

import av
import grpc
import httpx
import numpy as np
import pyarrow.parquet as pq
import pytest

from sarm.data.lerobot import LeRobotDataset
from sarm.encoders.base import TextEncoder
from sarm.export.model_repo import export_model_repository
from sarm.lerobot.checkpoint import import_lerobot
from sarm.lerobot.text import LeRobotTextEncoder
from sarm.manifest import read_manifest
from sarm.triton import TritonServer
from sarm_client import ScoringOptions
from sarm_gateway.v1 import sarm_pb2 as pb
from tests.conftest import LEROBOT_FIXTURE
from tests.gateway_harness import TIMEOUT, RunningGateway, raw

GOLDEN = LEROBOT_FIXTURE.parent / "lerobot_sarm_insertion"
CAMERA = "observation.images.top"
EVERY = 8  # compute_sarm_progress(stride=8): the frames LeRobot scored
EPISODES = (0, 5)  # a successful and a failed episode (the README says which end near 0.67)
TOLERANCE = 1e-3

pytestmark = pytest.mark.skipif(not GOLDEN.is_dir(), reason=f"the shared fixture {GOLDEN} is missing")


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("lerobot-serving")
    import_lerobot(GOLDEN / "checkpoint", str(GOLDEN / "clip"), root / "ckpt")
    export_model_repository(root / "ckpt", root / "repo", "cpu")
    return root / "repo"


@pytest.fixture(scope="module")
def clip_text(repo: Path) -> TextEncoder:
    return LeRobotTextEncoder(read_manifest(repo).text_encoder.extra["model_path"])


@pytest.fixture(scope="module")
def served(repo: Path, clip_text: TextEncoder) -> Iterator[RunningGateway]:
    running = RunningGateway(
        repo,
        clip_text,
        http_port=0,
        max_message_bytes=64 * 1024 * 1024,
        data_root=LEROBOT_FIXTURE.parent,  # read only: jobs write their results to the job store
        job_heartbeat_s=0.05,
    )
    yield running
    running.close()


@pytest.fixture(scope="module")
def dataset() -> LeRobotDataset:
    return LeRobotDataset(LEROBOT_FIXTURE)


@pytest.fixture(scope="module")
def golden() -> dict[int, dict[str, np.ndarray]]:
    """LeRobot's progress per episode and head, on the frames it scored (the others it interpolated)."""
    table = pq.read_table(GOLDEN / "sarm_progress.parquet").to_pydict()
    episode, frame = np.array(table["episode_index"]), np.array(table["frame_index"])
    out: dict[int, dict[str, np.ndarray]] = {}
    for e in EPISODES:
        rows = np.flatnonzero(episode == e)
        rows = rows[np.argsort(frame[rows])]
        length = len(rows)
        scored = np.flatnonzero((np.arange(length) % EVERY == 0) | (np.arange(length) == length - 1))
        out[e] = {
            "frames": scored,
            "sparse": np.array(table["progress_sparse"])[rows][scored],
            "dense": np.array(table["progress_dense"])[rows][scored],
        }
    return out


def episode_inputs(dataset: LeRobotDataset, episode: int) -> tuple[np.ndarray, np.ndarray, str]:
    frames = dataset.frames(episode, CAMERA)
    state = np.asarray(dataset.column(episode, "observation.state"), np.float32)
    task = dataset.tasks[int(dataset.frame_rows(episode).column("task_index")[0].as_py())]
    return frames, state, task


def score_frames(stub: object, frames: np.ndarray, state: np.ndarray | None, task: str) -> list[pb.FrameScore]:
    request = pb.ScoreFramesRequest(
        instruction=task,
        frames=[raw(f) for f in frames],
        fps=50.0,
        options=pb.ScoringOptions(score_every=EVERY),
        state=[] if state is None else state.ravel().tolist(),
    )
    return list(stub.ScoreFrames(request, timeout=TIMEOUT * 4))  # type: ignore[attr-defined]


def check_against_golden(scores: list[pb.FrameScore], golden: dict[str, np.ndarray]) -> None:
    assert [s.frame_index for s in scores] == golden["frames"].tolist()
    sparse = np.array([s.score.progress for s in scores])
    dense = np.array([s.score.dense.progress for s in scores])
    assert np.abs(sparse - golden["sparse"]).max() < TOLERANCE
    assert np.abs(dense - golden["dense"]).max() < TOLERANCE


def test_model_info_describes_the_imported_model(served: RunningGateway) -> None:
    info = served.stub.GetModelInfo(pb.GetModelInfoRequest(), timeout=TIMEOUT)
    assert info.architecture == "lerobot-sarm" and list(info.heads) == ["sparse", "dense"]
    assert info.window.mode == "centered" and info.window.stride_frames == 30 and info.window.frames == 9
    assert info.state_dim == 14 and info.image.resize == "clip" and len(info.dense_stage_names) == 5


def test_score_frames_gives_lerobots_numbers(
    served: RunningGateway, dataset: LeRobotDataset, golden: dict[int, dict[str, np.ndarray]]
) -> None:
    for episode in EPISODES:
        frames, state, task = episode_inputs(dataset, episode)
        check_against_golden(score_frames(served.stub, frames, state, task), golden[episode])


def test_score_window_scores_its_centre(
    served: RunningGateway, dataset: LeRobotDataset, golden: dict[int, dict[str, np.ndarray]]
) -> None:
    frames, state, task = episode_inputs(dataset, 0)
    t = int(golden[0]["frames"][20])
    window = np.clip(t + 30 * np.arange(-4, 5), 0, len(frames) - 1)  # LeRobot's centred window, clamped
    response = served.stub.ScoreWindow(
        pb.ScoreWindowRequest(
            instruction=task, frames=[raw(frames[i]) for i in window], state=state[window].ravel().tolist()
        ),
        timeout=TIMEOUT,
    )
    assert abs(response.score.progress - golden[0]["sparse"][20]) < TOLERANCE
    assert abs(response.score.dense.progress - golden[0]["dense"][20]) < TOLERANCE


def test_frames_without_the_state_are_refused(served: RunningGateway, dataset: LeRobotDataset) -> None:
    frames, _, task = episode_inputs(dataset, 0)
    with pytest.raises(grpc.RpcError) as error:
        score_frames(served.stub, frames[:40], None, task)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "joint state" in (error.value.details() or "") and "14" in (error.value.details() or "")


def test_a_live_stream_is_refused_clearly(served: RunningGateway) -> None:
    opened = pb.StreamEpisodeRequest(open=pb.EpisodeOpen(instruction="insert the peg", fps=50.0))
    with pytest.raises(grpc.RpcError) as error:
        list(served.stub.StreamEpisode(iter([opened]), timeout=TIMEOUT))
    assert error.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "centred" in (error.value.details() or "")


def write_lossless(frames: np.ndarray, path: Path) -> None:
    """The episode as a lossless (FFV1 on RGB pixels) video: the upload decodes the dataset's own pixels."""
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("ffv1", rate=50)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "bgr0"
        for image in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode())


def test_video_upload_gives_lerobots_numbers(
    served: RunningGateway,
    dataset: LeRobotDataset,
    golden: dict[int, dict[str, np.ndarray]],
    tmp_path: Path,
) -> None:
    frames, state, task = episode_inputs(dataset, 5)
    write_lossless(frames, tmp_path / "episode.mkv")
    form = {"instruction": task, "score_every": str(EVERY)}
    with httpx.Client(base_url=served.http_url, timeout=TIMEOUT * 4) as http:
        bare = http.post("/v1/videos:score", data=form, files={"video": (tmp_path / "episode.mkv").open("rb")})
        assert bare.status_code == 422 and "joint state" in bare.text
        answer = http.post(
            "/v1/videos:score",
            data=form | {"state": json.dumps(state.tolist())},
            files={"video": (tmp_path / "episode.mkv").open("rb")},
        )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert [f["frame_index"] for f in body["frames"]] == golden[5]["frames"].tolist()
    assert np.abs(np.array([f["progress"] for f in body["frames"]]) - golden[5]["sparse"]).max() < TOLERANCE
    assert np.abs(np.array([f["dense"]["progress"] for f in body["frames"]]) - golden[5]["dense"]).max() < TOLERANCE


def test_triton_serves_the_same_numbers(
    repo: Path, clip_text: TextEncoder, dataset: LeRobotDataset, golden: dict[int, dict[str, np.ndarray]]
) -> None:
    with TritonServer(repo) as triton:
        running = RunningGateway(
            repo, clip_text, backend="triton", triton_url=triton.endpoints.grpc, max_message_bytes=64 * 1024 * 1024
        )
        try:
            frames, state, task = episode_inputs(dataset, 0)
            check_against_golden(score_frames(running.stub, frames, state, task), golden[0])
        finally:
            running.close()


def test_the_client_sends_state_and_reads_the_dense_head(
    served: RunningGateway, dataset: LeRobotDataset, golden: dict[int, dict[str, np.ndarray]], tmp_path: Path
) -> None:
    from sarm_client import NotLive, SarmClient

    frames, state, task = episode_inputs(dataset, 0)
    address = f"127.0.0.1:{served.gateway.port}"
    with SarmClient(address) as client:
        info = client.info()
        assert info.state_dim == 14 and info.heads == ("sparse", "dense") and info.image_resize == "clip"
        scores = client.score_frames(task, frames, 50.0, options=ScoringOptions(score_every=EVERY), state=state)
        assert [s.frame_index for s in scores] == golden[0]["frames"].tolist()
        dense = np.array([s.score.dense.progress for s in scores if s.score.dense is not None])
        assert np.abs(dense - golden[0]["dense"]).max() < TOLERANCE
        write_lossless(frames[:20], tmp_path / "short.mkv")
        with pytest.raises(NotLive, match="centred"):
            client.score_video(tmp_path / "short.mkv", task)
        with pytest.raises(NotLive, match="centred"), client.stream(task, fps=50.0) as episode:
            episode.step(frames[:1], state[0])


def test_an_rabc_job_labels_with_lerobots_numbers(
    served: RunningGateway, golden: dict[int, dict[str, np.ndarray]]
) -> None:
    """A job on the gateway serving the imported model scores on that engine: centred windows, the dataset's state,
    both heads; the progress it returns is LeRobot's on the frames LeRobot scored."""
    from sarm_client import RabcJobs

    jobs = RabcJobs(served.http_url)
    job = jobs.submit(LEROBOT_FIXTURE.name, chunk_size=10, stride=EVERY)
    jobs.wait(job.id, poll_s=0.2, timeout=TIMEOUT * 20)
    table = pq.read_table(io.BytesIO(jobs.download(job.id, "progress"))).to_pydict()
    episode, frame = np.array(table["episode_index"]), np.array(table["frame_index"])
    for e in EPISODES:
        rows = np.flatnonzero(episode == e)
        rows = rows[np.argsort(frame[rows])][golden[e]["frames"]]
        for head in ("sparse", "dense"):
            assert np.abs(np.array(table[f"progress_{head}"])[rows] - golden[e][head]).max() < TOLERANCE, (e, head)
