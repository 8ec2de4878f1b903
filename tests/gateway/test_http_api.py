"""The HTTP API end to end: a real uvicorn server (in the gRPC gateway's process and loop), real httpx clients, and
real videos written with PyAV.

Scores are checked against the gRPC ScoreFrames call on the same decoded frames: one engine, one scoring path.
"""

from __future__ import annotations

import io
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from sarm.data.video import VideoWriter, read_frames
from sarm.encoders.base import TextEncoder
from sarm.rabc.files import read_progress
from sarm_gateway.v1 import sarm_pb2 as pb
from tests.gateway_harness import INSTRUCTION, TIMEOUT, H, RunningGateway, W, episode_frames, raw, window_request

FPS = 10


def write_video(path: Path, frames: np.ndarray, fps: int = FPS) -> Path:
    with VideoWriter(path, fps, frames.shape[2], frames.shape[1]) as writer:
        writer.append(frames)
    return path


def moving_bar(n: int, height: int = H, width: int = W) -> np.ndarray:
    """Frames whose content changes smoothly (a bar crossing the image), so H.264 keeps them apart."""
    frames = np.full((n, height, width, 3), 40, np.uint8)
    for t in range(n):
        column = int(t / max(n - 1, 1) * (width - 8))
        frames[t, height // 4 : 3 * height // 4, column : column + 8] = (220, 120, 30)
    return frames


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("videos")
    return {
        "episode": write_video(root / "episode.mp4", moving_bar(30)),  # 3 s at the model's size
        "large": write_video(root / "large.mp4", moving_bar(12, 2 * H, 2 * W)),  # resized to 48x64
        "short": write_video(root / "short.mp4", moving_bar(8)),
    }


@pytest.fixture(scope="module")
def upload_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("uploads")


@pytest.fixture(scope="module")
def served(cpu_model_repo: Path, text_encoder: TextEncoder, upload_dir: Path) -> Iterator[RunningGateway]:
    running = RunningGateway(
        cpu_model_repo,
        text_encoder,
        http_port=0,
        upload_dir=upload_dir,
        max_video_seconds=20,
        max_video_frames=200,
        max_video_pixels=4 * H * W,
        max_upload_bytes=1024 * 1024,
        upload_timeout_s=1.0,
    )
    yield running
    running.close()


@pytest.fixture
def client(served: RunningGateway, upload_dir: Path) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=served.http_url, timeout=TIMEOUT) as http:
        yield http
    assert_removed(upload_dir)


def assert_removed(upload_dir: Path) -> None:
    """Every upload's temp file is gone once its answer is out (or soon after, when the client vanished)."""
    deadline = time.monotonic() + 5
    while list(upload_dir.iterdir()):
        assert time.monotonic() < deadline, f"temp files left: {list(upload_dir.iterdir())}"
        time.sleep(0.02)


def score(
    client: httpx.Client, video: Path | bytes, query: dict[str, str] | None = None, **fields: str
) -> httpx.Response:
    content = video.read_bytes() if isinstance(video, Path) else video
    return client.post(
        "/v1/videos:score",
        params=query,
        data={"instruction": INSTRUCTION, **fields},
        files={"video": ("episode.mp4", content, "video/mp4")},
    )


def test_video_curve_matches_score_frames_on_the_same_frames(
    served: RunningGateway, client: httpx.Client, videos: dict[str, Path]
) -> None:
    reply = score(client, videos["episode"])  # smoothing is on by default, as in gRPC
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["fps"] == FPS and body["num_frames"] == 30 and body["stride_frames"] == 10
    assert body["model_version"] == served.gateway.engine.version and body["instruction"] == INSTRUCTION
    frames = body["frames"]
    assert [f["frame_index"] for f in frames] == list(range(30))
    np.testing.assert_allclose([f["timestamp"] for f in frames], np.arange(30) / FPS)
    assert all(f["stage_name"] in ("reach", "grasp", "lift") and f["smoothed_progress"] is not None for f in frames)

    decoded = read_frames(videos["episode"], FPS, 0.0, 30)
    encoded, heads_rows = served.backend.encoded, served.backend.heads_rows
    request = pb.ScoreFramesRequest(instruction=INSTRUCTION, frames=[raw(f) for f in decoded], fps=FPS)
    curve = list(served.stub.ScoreFrames(request, timeout=TIMEOUT))
    assert served.backend.encoded == encoded  # the same engine: the upload's frames were in its cache
    assert served.backend.heads_rows == heads_rows  # and its windows' scores
    for name in ("tau", "progress", "confidence"):
        np.testing.assert_allclose([f[name] for f in frames], [getattr(c.score, name) for c in curve], atol=1e-5)
    np.testing.assert_allclose(
        [f["smoothed_progress"] for f in frames], [c.smoothed_progress for c in curve], atol=1e-5
    )
    assert [f["stage_index"] for f in frames] == [c.score.stage_index for c in curve]


def test_score_every_fps_override_and_resizing(client: httpx.Client, videos: dict[str, Path]) -> None:
    reply = score(client, videos["episode"], score_every="4", fps="5")
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["fps"] == 5 and body["stride_frames"] == 5
    # Every 4th frame and the last (sarm.scoring.curve).
    assert [f["frame_index"] for f in body["frames"]] == [0, 4, 8, 12, 16, 20, 24, 28, 29]
    assert body["frames"][1]["timestamp"] == pytest.approx(0.8)
    large = score(client, videos["large"])  # 96x128, resized to the model's 48x64
    assert large.status_code == 200 and large.json()["num_frames"] == 12


def test_png_plot(client: httpx.Client, videos: dict[str, Path]) -> None:
    reply = score(client, videos["episode"], {"format": "png"})
    assert reply.status_code == 200, reply.text
    assert reply.headers["content-type"] == "image/png"
    with Image.open(io.BytesIO(reply.content)) as image:
        assert image.format == "PNG" and image.size[0] >= 600 and image.size[1] >= 400


def test_parquet_in_the_sarm_progress_schema(client: httpx.Client, videos: dict[str, Path], tmp_path: Path) -> None:
    as_json = score(client, videos["episode"]).json()
    reply = score(client, videos["episode"], format="parquet")  # the smoothed progress, as smoothing is on
    assert reply.status_code == 200, reply.text
    (tmp_path / "smoothed.parquet").write_bytes(reply.content)
    smoothed = read_progress(tmp_path / "smoothed.parquet")
    np.testing.assert_allclose(
        smoothed.episodes[0].progress, [f["smoothed_progress"] for f in as_json["frames"]], atol=1e-6
    )
    assert smoothed.provenance["smoothing"] == {"filter": "one-euro", "cutoff_hz": 1.0, "beta": 0.5}
    # A request that tunes the history smoother without naming a filter (as before the choice existed) gets it.
    reply = score(client, videos["episode"], format="parquet", smoothing_min_confidence="0.5")
    (tmp_path / "history.parquet").write_bytes(reply.content)
    expected = {"filter": "history", "history": 10, "min_confidence": 0.5}
    assert read_progress(tmp_path / "history.parquet").provenance["smoothing"] == expected
    # Off, the raw progress: what `sarm rabc` writes, and what the rest compares.
    reply = score(client, videos["episode"], format="parquet", smoothing="false")
    assert reply.status_code == 200, reply.text
    assert reply.headers["content-type"] == "application/vnd.apache.parquet"
    assert 'filename="sarm_progress.parquet"' in reply.headers["content-disposition"]
    table = pq.read_table(io.BytesIO(reply.content))
    assert [(f.name, str(f.type)) for f in table.schema] == [
        ("index", "int64"),
        ("episode_index", "int64"),
        ("frame_index", "int64"),
        ("progress_sparse", "float"),
    ]
    assert table.column("frame_index").to_pylist() == list(range(30)) == table.column("index").to_pylist()
    (tmp_path / "sarm_progress.parquet").write_bytes(reply.content)
    progress = read_progress(tmp_path / "sarm_progress.parquet")  # what the RA-BC weights read
    [episode] = progress.episodes
    assert episode.episode_index == 0
    np.testing.assert_allclose(episode.progress, [f["progress"] for f in as_json["frames"]], atol=1e-6)
    assert progress.provenance["model_version"] == as_json["model_version"] and progress.provenance["smoothing"] is None
    assert progress.provenance["window"] == {"mode": "causal", "frames": 9, "stride_frames": 10}
    # Every 2nd frame and the last scored, the others interpolated: the one rule `sarm rabc --stride` uses.
    gapped = score(client, videos["episode"], score_every="2", format="parquet", smoothing="false")
    assert gapped.status_code == 200, gapped.text
    (tmp_path / "gapped.parquet").write_bytes(gapped.content)
    interpolated = read_progress(tmp_path / "gapped.parquet")
    [sparse] = interpolated.episodes
    assert len(sparse.progress) == 30 and interpolated.provenance["interpolation"] == "linear"
    np.testing.assert_allclose(sparse.progress[::2], episode.progress[::2], atol=1e-6)  # the scored frames
    np.testing.assert_allclose(sparse.progress[29], episode.progress[29], atol=1e-6)  # and the last
    np.testing.assert_allclose(
        sparse.progress[1:28:2], (sparse.progress[0:27:2] + sparse.progress[2:29:2]) / 2, atol=1e-6
    )


def test_format_in_query_and_form_must_agree(client: httpx.Client, videos: dict[str, Path]) -> None:
    reply = score(client, videos["short"], {"format": "png"}, format="json")
    assert reply.status_code == 422 and "format is 'png' in the query but 'json' in the form" in reply.text
    assert score(client, videos["short"], {"format": "gif"}).status_code == 422


def test_probes_model_info_and_openapi(served: RunningGateway, client: httpx.Client) -> None:
    assert client.get("/livez").json() == {"status": "alive"}
    assert client.get("/readyz").json() == {"status": "ready"}
    info = client.get("/v1/model").json()
    grpc_info = served.stub.GetModelInfo(pb.GetModelInfoRequest(), timeout=TIMEOUT)
    assert info["model_version"] == grpc_info.model_version and info["stage_names"] == ["reach", "grasp", "lift"]
    assert info["image"] == {"height": H, "width": W, "resize": "exact"} and info["window"]["frames"] == 9
    assert info["tasks"][0]["proportions"] == pytest.approx([0.5, 0.2, 0.3])
    assert info["frame_encoder"]["id"] == grpc_info.frame_encoder.id and info["backend"] == "local"
    schema = client.get("/openapi.json").json()
    operations = {op["operationId"] for path in schema["paths"].values() for op in path.values()}
    assert operations == {
        "livez",
        "readyz",
        "metrics",
        "getModelInfo",
        "scoreVideo",
        "createRabcJob",
        "getRabcJob",
        "cancelRabcJob",
        "getRabcJobResult",
    }
    body = schema["paths"]["/v1/videos:score"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert body["required"] == ["video", "instruction"] and body["properties"]["video"]["format"] == "binary"


def test_readyz_is_503_while_draining_or_while_the_backend_is_not_ready(
    served: RunningGateway, client: httpx.Client
) -> None:
    readiness = served.gateway.readiness
    try:
        readiness.backend_ready = False
        reply = client.get("/readyz")
        assert reply.status_code == 503 and "backend" in reply.json()["status"]
        readiness.backend_ready, readiness.draining = True, True
        reply = client.get("/readyz")
        assert reply.status_code == 503 and "draining" in reply.json()["status"]
    finally:
        readiness.backend_ready, readiness.draining = True, False
    assert client.get("/readyz").status_code == 200


def bad_form_cases(videos: dict[str, Path]) -> dict[str, tuple[dict[str, object], int, str]]:
    episode = videos["episode"].read_bytes()
    video = ("v.mp4", episode, "video/mp4")
    return {
        "no video": ({"files": {"instruction": (None, INSTRUCTION)}}, 422, "no 'video' field"),
        "unknown field": (
            {"data": {"instruction": INSTRUCTION}, "files": {"video": video, "other": ("x", b"1")}},
            422,
            "unknown form field 'other'",
        ),
        "missing instruction": ({"files": {"video": video}}, 422, "instruction"),
        "empty instruction": ({"data": {"instruction": " "}, "files": {"video": video}}, 422, "instruction is empty"),
        "fps zero": ({"data": {"instruction": INSTRUCTION, "fps": "0"}, "files": {"video": video}}, 422, "fps"),
        "fps text": ({"data": {"instruction": INSTRUCTION, "fps": "fast"}, "files": {"video": video}}, 422, "fps"),
        "score_every zero": (
            {"data": {"instruction": INSTRUCTION, "score_every": "0"}, "files": {"video": video}},
            422,
            "score_every",
        ),
        "unknown filter": (
            {"data": {"instruction": INSTRUCTION, "smoothing_filter": "kalman"}, "files": {"video": video}},
            422,
            "smoothing_filter",
        ),
        "negative beta": (
            {"data": {"instruction": INSTRUCTION, "smoothing_beta": "-1"}, "files": {"video": video}},
            422,
            "smoothing_beta",
        ),
        "two videos": (
            {"data": {"instruction": INSTRUCTION}, "files": [("video", video), ("video", video)]},
            422,
            "sent twice",
        ),
        "json body": ({"json": {"instruction": INSTRUCTION}}, 415, "multipart/form-data"),
        "random bytes": (
            {
                "data": {"instruction": INSTRUCTION},
                "files": {"video": ("v.mp4", np.random.default_rng(0).bytes(4000), "video/mp4")},
            },
            422,
            "cannot be read as a video",
        ),
        "truncated mp4": (
            {
                "data": {"instruction": INSTRUCTION},
                "files": {"video": ("v.mp4", episode[: len(episode) // 2], "video/mp4")},
            },
            422,
            "corrupt or truncated",
        ),
        "text file": (
            {"data": {"instruction": INSTRUCTION}, "files": {"video": ("v.txt", b"hello " * 100)}},
            422,
            "cannot be read as a video",
        ),
        "png image": (
            {"data": {"instruction": INSTRUCTION}, "files": {"video": ("v.png", png_bytes())}},
            422,
            "cannot be read as a video",
        ),
        "empty file": (
            {"data": {"instruction": INSTRUCTION}, "files": {"video": ("v.mp4", b"")}},
            422,
            "cannot be read as a video",
        ),
    }


def png_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(episode_frames(1, seed=0)[0]).save(buffer, format="PNG")
    return buffer.getvalue()


CASES = [
    "no video",
    "unknown field",
    "missing instruction",
    "empty instruction",
    "fps zero",
    "fps text",
    "score_every zero",
    "two videos",
    "json body",
    "random bytes",
    "truncated mp4",
    "text file",
    "png image",
    "empty file",
]


@pytest.mark.parametrize("case", CASES)
def test_bad_uploads_are_4xx_naming_the_problem(client: httpx.Client, videos: dict[str, Path], case: str) -> None:
    request, status, message = bad_form_cases(videos)[case]
    reply = client.post("/v1/videos:score", **request)  # type: ignore[arg-type]
    assert reply.status_code == status, reply.text
    assert message in reply.text and "sarm-upload-" not in reply.text  # no word of our temp files


def test_video_limits_name_their_settings(client: httpx.Client, tmp_path: Path) -> None:
    long = write_video(tmp_path / "long.mp4", moving_bar(210, 16, 16), fps=10)  # 21 s > 20 s
    reply = score(client, long)
    assert reply.status_code == 422 and "SARM_MAX_VIDEO_SECONDS" in reply.text and "21.0 s" in reply.text
    many = write_video(tmp_path / "many.mp4", moving_bar(201, 16, 16), fps=100)  # 201 frames > 200 in 2 s
    reply = score(client, many)
    assert reply.status_code == 422 and "SARM_MAX_VIDEO_FRAMES" in reply.text
    wide = write_video(tmp_path / "wide.mp4", moving_bar(2, 2 * H, 4 * W))  # 8 × the model's pixels > 4 ×
    reply = score(client, wide)
    assert reply.status_code == 422 and "SARM_MAX_VIDEO_PIXELS" in reply.text and f"{4 * W}x{2 * H}" in reply.text


def test_frame_limit_holds_while_decoding_a_stream_without_a_header(client: httpx.Client, tmp_path: Path) -> None:
    """A raw H.264 stream states neither duration nor frame count: the limit is met while decoding."""
    import av

    path = tmp_path / "raw.h264"
    with av.open(str(path), "w", format="h264") as container:
        stream = container.add_stream("libx264", rate=100)
        stream.width, stream.height, stream.pix_fmt = 16, 16, "yuv420p"
        for image in moving_bar(201, 16, 16):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode(None))
    reply = score(client, path, fps="100")
    assert reply.status_code == 422 and "the video has at least 201 frames" in reply.text


def test_upload_over_the_size_limit_is_413_while_streaming(served: RunningGateway, client: httpx.Client) -> None:
    boundary = "sarmtestboundary"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="instruction"\r\n\r\n{INSTRUCTION}\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="video"; filename="v.mp4"\r\n'
        "Content-Type: video/mp4\r\n\r\n"
    ).encode()
    sent = 0

    def body() -> Iterator[bytes]:  # chunked, no Content-Length: only counting the stream can stop it
        nonlocal sent
        yield head
        for _ in range(64):  # 4 MiB against a 1 MiB limit
            sent += 1
            yield b"\0" * 65536

    reply = client.post(
        "/v1/videos:score", content=body(), headers={"content-type": f"multipart/form-data; boundary={boundary}"}
    )
    assert reply.status_code == 413 and "SARM_MAX_UPLOAD_BYTES" in reply.text
    # Declared too large: refused from the header alone.
    reply = client.post(
        "/v1/videos:score",
        content=b"x" * (1024 * 1024 + 1),
        headers={"content-type": f"multipart/form-data; boundary={boundary}"},
    )
    assert reply.status_code == 413 and "the upload is 1048577 bytes" in reply.text


def raw_upload(port: int, body: bytes, declared: int) -> socket.socket:
    """A socket that has sent a multipart request's headers and `body` (of `declared` bytes) and then waits."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
    sock.sendall(
        b"POST /v1/videos:score HTTP/1.1\r\nHost: test\r\n"
        b"Content-Type: multipart/form-data; boundary=b\r\n" + f"Content-Length: {declared}\r\n\r\n".encode() + body
    )
    return sock


def read_reply(sock: socket.socket) -> str:
    """One HTTP response off a raw socket: its headers, then Content-Length bytes of body."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(4096)
    head, _, body = data.partition(b"\r\n\r\n")
    headers = dict(line.lower().split(b": ", 1) for line in head.split(b"\r\n")[1:])
    length = int(headers[b"content-length"])
    while len(body) < length:
        body += sock.recv(4096)
    return (head + b"\r\n\r\n" + body).decode()


def test_a_stalled_upload_is_408_and_a_vanished_client_leaves_no_file(served: RunningGateway, upload_dir: Path) -> None:
    part = b'--b\r\nContent-Disposition: form-data; name="video"; filename="v.mp4"\r\n\r\n' + b"\0" * 1000
    with raw_upload(served.gateway.http_port, part, 100_000) as stalled:
        reply = read_reply(stalled)  # the server gives up after upload_timeout_s (1 s)
        assert reply.startswith("HTTP/1.1 408") and "SARM_UPLOAD_TIMEOUT_S" in reply
    with raw_upload(served.gateway.http_port, part, 100_000):
        time.sleep(0.2)  # the part is being written; then the client vanishes
    assert_removed(upload_dir)
    with httpx.Client(base_url=served.http_url) as http:
        assert http.get("/livez").status_code == 200


def test_a_truncated_multipart_body_is_400(served: RunningGateway, upload_dir: Path) -> None:
    part = b'--b\r\nContent-Disposition: form-data; name="video"; filename="v.mp4"\r\n\r\n' + b"\0" * 1000
    sock = raw_upload(served.gateway.http_port, part, len(part))  # the body ends without its closing boundary
    with sock:
        reply = read_reply(sock)
    assert reply.startswith("HTTP/1.1 400") and "closing boundary" in reply
    assert_removed(upload_dir)


def test_a_full_gateway_refuses_uploads_with_429_before_reading_them(
    cpu_model_repo: Path, text_encoder: TextEncoder, videos: dict[str, Path], tmp_path: Path
) -> None:
    running = RunningGateway(
        cpu_model_repo, text_encoder, gated=True, http_port=0, max_in_flight=1, upload_dir=tmp_path
    )
    try:
        held = running.stub.ScoreWindow.future(
            window_request([raw(f) for f in episode_frames(9, seed=60)]), timeout=TIMEOUT
        )
        running.wait_in_flight(1)  # the gRPC call holds the only slot: HTTP shares the bound
        with httpx.Client(base_url=running.http_url, timeout=TIMEOUT) as http:
            reply = score(http, videos["short"])
            assert reply.status_code == 429 and reply.headers["retry-after"] == "1"
            assert "retry after 100 ms" in reply.text
            running.open_gate()
            assert held.result(TIMEOUT).score.model_version
            assert score(http, videos["short"]).status_code == 200
        assert list(tmp_path.iterdir()) == []
    finally:
        running.open_gate()
        running.close()


def test_sigterm_drain_finishes_an_upload_in_flight_and_stops_listening(
    cpu_model_repo: Path, text_encoder: TextEncoder, videos: dict[str, Path]
) -> None:
    import asyncio
    import threading

    running = RunningGateway(cpu_model_repo, text_encoder, gated=True, http_port=0)
    replies: list[httpx.Response] = []
    with httpx.Client(base_url=running.http_url, timeout=TIMEOUT) as http:
        upload = threading.Thread(target=lambda: replies.append(score(http, videos["short"])))
        upload.start()
        running.wait_in_flight(1)
        stopping = asyncio.run_coroutine_threadsafe(running.gateway.stop(), running.loop)
        deadline = time.monotonic() + TIMEOUT
        while not running.gateway.readiness.draining:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        running.open_gate()
        upload.join(TIMEOUT)
        stopping.result(TIMEOUT)
    assert replies and replies[0].status_code == 200 and replies[0].json()["num_frames"] == 8
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{running.http_url}/livez", timeout=2)
    running.gateway.server = None  # type: ignore[assignment]  # already stopped
    running.close()


TOKENS = {"controller": "robot-secret", "evaluator": "eval-secret"}


def test_bearer_auth_same_roles_as_grpc(
    cpu_model_repo: Path, text_encoder: TextEncoder, videos: dict[str, Path]
) -> None:
    running = RunningGateway(cpu_model_repo, text_encoder, http_port=0, auth_tokens=TOKENS)
    try:
        with httpx.Client(base_url=running.http_url, timeout=TIMEOUT) as http:
            for path in ("/livez", "/readyz", "/metrics"):  # probes and scrapes carry no token
                assert http.get(path).status_code == 200
            reply = http.get("/v1/model")
            assert reply.status_code == 401 and reply.headers["www-authenticate"] == "Bearer"
            assert "requires a token" in reply.json()["detail"]
            reply = http.get("/v1/model", headers={"authorization": "Bearer nope"})
            assert reply.status_code == 401 and "not recognised" in reply.json()["detail"]
            assert http.get("/v1/model", headers={"authorization": "Bearer robot-secret"}).status_code == 200
            http.headers["authorization"] = "Bearer robot-secret"
            reply = score(http, videos["short"])
            assert reply.status_code == 403 and "role 'controller' may not call video" in reply.json()["detail"]
            http.headers["authorization"] = "Bearer eval-secret"
            assert score(http, videos["short"]).status_code == 200
    finally:
        running.close()
