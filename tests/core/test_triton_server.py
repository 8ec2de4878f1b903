"""The real tritonserver binary (from nvidia-pytriton) serving ONNX models through our python-backend template.

No fakes: one server per module on free loopback ports. If tritonserver cannot start here, every test errors with
the server log (TritonError) rather than skipping.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as grpcaio
import tritonclient.http as httpclient
from onnx import TensorProto, helper, numpy_helper
from tritonclient.utils import InferenceServerException

from sarm.triton import Batching, TensorSpec, TritonError, TritonServer, free_ports, write_onnx_python_model
from sarm.triton.client import infer_inputs

RNG = np.random.default_rng(0)
WEIGHT = RNG.normal(size=(4, 3)).astype(np.float32)
BIAS = RNG.normal(size=3).astype(np.float32)
TABLE = RNG.normal(size=(4, 2)).astype(np.float32)
AFFINE_IO = (
    [TensorSpec("x", "TYPE_FP32", [4]), TensorSpec("k", "TYPE_INT64", [1])],
    [TensorSpec("y", "TYPE_FP32", [3]), TensorSpec("z", "TYPE_INT64", [1])],
)
LOOKUP_IO = ([TensorSpec("idx", "TYPE_INT64", [1])], [TensorSpec("emb", "TYPE_FP32", [1, 2])])
CLIENT_TIMEOUT_S = 20.0
STARTUP: dict[str, float] = {}


def _save(graph: onnx.GraphProto, path: Path) -> Path:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


def affine_onnx(path: Path) -> Path:
    """y = x @ W + b (float32) and z = 2k (int64): two inputs, two outputs, two dtypes, symbolic batch."""
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "W"], ["xw"]),
            helper.make_node("Add", ["xw", "b"], ["y"]),
            helper.make_node("Add", ["k", "k"], ["z"]),
        ],
        "affine",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4]),
            helper.make_tensor_value_info("k", TensorProto.INT64, ["batch", 1]),
        ],
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3]),
            helper.make_tensor_value_info("z", TensorProto.INT64, ["batch", 1]),
        ],
        initializer=[numpy_helper.from_array(WEIGHT, "W"), numpy_helper.from_array(BIAS, "b")],
    )
    return _save(graph, path)


def lookup_onnx(path: Path) -> Path:
    """An embedding lookup: onnxruntime fails on an out-of-range index, which Triton cannot validate."""
    graph = helper.make_graph(
        [helper.make_node("Gather", ["table", "idx"], ["emb"])],
        "lookup",
        [helper.make_tensor_value_info("idx", TensorProto.INT64, ["batch", 1])],
        [helper.make_tensor_value_info("emb", TensorProto.FLOAT, ["batch", 1, 2])],
        initializer=[numpy_helper.from_array(TABLE, "table")],
    )
    return _save(graph, path)


@pytest.fixture(scope="module")
def onnx_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("onnx")
    return {"affine": affine_onnx(root / "affine.onnx"), "lookup": lookup_onnx(root / "lookup.onnx")}


@pytest.fixture(scope="module")
def model_repo(tmp_path_factory: pytest.TempPathFactory, onnx_models: dict[str, Path]) -> Path:
    repo = tmp_path_factory.mktemp("model_repo")
    # "affine" waits up to 20 ms to fill a batch (so batching is observable); "affine_nowait" never waits (latency).
    write_onnx_python_model(repo, "affine", onnx_models["affine"], *AFFINE_IO, Batching(32, [8, 16, 32], 20_000))
    write_onnx_python_model(repo, "affine_nowait", onnx_models["affine"], *AFFINE_IO, Batching(32))
    write_onnx_python_model(repo, "lookup", onnx_models["lookup"], *LOOKUP_IO, Batching(32, [], 20_000))
    return repo


@pytest.fixture(scope="module")
def server(model_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonServer]:
    log_file = tmp_path_factory.mktemp("triton_log") / "tritonserver.log"
    started = time.monotonic()
    with TritonServer(model_repo, log_file=log_file, startup_timeout_s=120) as running:
        STARTUP["seconds"] = time.monotonic() - started
        yield running


@pytest.fixture(scope="module")
def grpc_client(server: TritonServer) -> Iterator[grpcclient.InferenceServerClient]:
    client = grpcclient.InferenceServerClient(server.endpoints.grpc)
    yield client
    client.close()


def affine_inputs(batch: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(batch, 4)).astype(np.float32), rng.integers(-100, 100, size=(batch, 1))


def reference(onnx_path: Path, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    return list(session.run(None, feed))


def grpc_inputs(**arrays: np.ndarray) -> list[grpcclient.InferInput]:
    return infer_inputs(arrays)


def model_stats(client: grpcclient.InferenceServerClient, model: str) -> tuple[int, int]:
    """(inference_count, execution_count): requests' batch items vs model executions."""
    stats = client.get_inference_statistics(model, as_json=True)["model_stats"][0]
    return int(stats.get("inference_count", 0)), int(stats.get("execution_count", 0))


def test_server_and_models_become_ready(server: TritonServer, grpc_client: grpcclient.InferenceServerClient) -> None:
    assert grpc_client.is_server_live() and grpc_client.is_server_ready()
    for model in ("affine", "affine_nowait", "lookup"):
        assert grpc_client.is_model_ready(model)
    assert grpc_client.get_model_config("affine", as_json=True)["config"]["backend"] == "python"
    print(f"tritonserver ready in {STARTUP['seconds']:.2f} s")


def test_grpc_and_http_match_onnxruntime(
    server: TritonServer, grpc_client: grpcclient.InferenceServerClient, onnx_models: dict[str, Path]
) -> None:
    x, k = affine_inputs(5)
    expected_y, expected_z = reference(onnx_models["affine"], {"x": x, "k": k})

    result = grpc_client.infer("affine", grpc_inputs(x=x, k=k), client_timeout=CLIENT_TIMEOUT_S)
    np.testing.assert_array_equal(result.as_numpy("y"), expected_y)
    np.testing.assert_array_equal(result.as_numpy("z"), expected_z)

    http = httpclient.InferenceServerClient(server.endpoints.http, network_timeout=CLIENT_TIMEOUT_S)
    try:
        inputs = [httpclient.InferInput("x", [5, 4], "FP32"), httpclient.InferInput("k", [5, 1], "INT64")]
        inputs[0].set_data_from_numpy(x)
        inputs[1].set_data_from_numpy(k)
        http_result = http.infer("affine", inputs)
    finally:
        http.close()
    np.testing.assert_array_equal(http_result.as_numpy("y"), expected_y)
    np.testing.assert_array_equal(http_result.as_numpy("z"), expected_z)


async def _infer_concurrently(
    url: str, model: str, feeds: list[dict[str, np.ndarray]]
) -> list[grpcclient.InferResult | BaseException]:
    client = grpcaio.InferenceServerClient(url)
    try:

        async def one(feed: dict[str, np.ndarray]) -> grpcclient.InferResult:
            return await client.infer(model, infer_inputs(feed), client_timeout=CLIENT_TIMEOUT_S)

        return await asyncio.gather(*(one(feed) for feed in feeds), return_exceptions=True)
    finally:
        await client.close()


def test_concurrent_requests_are_batched_and_answered_correctly(
    server: TritonServer, grpc_client: grpcclient.InferenceServerClient, onnx_models: dict[str, Path]
) -> None:
    feeds = [dict(zip(("x", "k"), affine_inputs(1 + i % 3, seed=i), strict=True)) for i in range(32)]
    before = model_stats(grpc_client, "affine")
    results = asyncio.run(_infer_concurrently(server.endpoints.grpc, "affine", feeds))
    inferences, executions = (a - b for a, b in zip(model_stats(grpc_client, "affine"), before, strict=True))

    for feed, result in zip(feeds, results, strict=True):
        assert isinstance(result, grpcclient.InferResult), result
        expected_y, expected_z = reference(onnx_models["affine"], feed)
        np.testing.assert_allclose(result.as_numpy("y"), expected_y, rtol=1e-6, atol=1e-6)
        np.testing.assert_array_equal(result.as_numpy("z"), expected_z)
    assert inferences == sum(len(feed["x"]) for feed in feeds)
    assert executions < len(feeds), f"{len(feeds)} requests ran as {executions} executions: no dynamic batching"


def _success_count(metrics_endpoint: str, model: str) -> float:
    with urllib.request.urlopen(f"http://{metrics_endpoint}/metrics", timeout=10) as response:
        lines = response.read().decode().splitlines()
    prefix = f'nv_inference_request_success{{model="{model}",version="1"}} '
    return sum(float(line.removeprefix(prefix)) for line in lines if line.startswith(prefix))


def test_metrics_endpoint_counts_successes(server: TritonServer, grpc_client: grpcclient.InferenceServerClient) -> None:
    before = _success_count(server.endpoints.metrics, "affine_nowait")
    x, k = affine_inputs(1)
    grpc_client.infer("affine_nowait", grpc_inputs(x=x, k=k), client_timeout=CLIENT_TIMEOUT_S)
    # Triton counts a request after its response is sent: the counter may lag the reply by a moment.
    deadline = time.monotonic() + 5
    while _success_count(server.endpoints.metrics, "affine_nowait") < before + 1:
        assert time.monotonic() < deadline, "nv_inference_request_success did not count the request"
        time.sleep(0.05)


@pytest.mark.parametrize(
    ("x", "message"),
    [
        (np.zeros((2, 4), np.float64), "data-type is 'FP64', but model 'affine' expects 'FP32'"),
        (np.zeros((2, 5), np.float32), r"unexpected shape for input 'x' .* Expected \[-1,4\], got \[2,5\]"),
    ],
    ids=["wrong-dtype", "wrong-shape"],
)
def test_invalid_request_gets_a_clear_error(
    grpc_client: grpcclient.InferenceServerClient, x: np.ndarray, message: str
) -> None:
    started = time.monotonic()
    with pytest.raises(InferenceServerException, match=message):
        grpc_client.infer("affine", grpc_inputs(x=x, k=np.zeros((2, 1), np.int64)), client_timeout=CLIENT_TIMEOUT_S)
    assert time.monotonic() - started < 5
    assert grpc_client.is_model_ready("affine")


def test_onnxruntime_failure_fails_only_its_own_request(
    server: TritonServer, grpc_client: grpcclient.InferenceServerClient
) -> None:
    with pytest.raises(InferenceServerException, match="indices element out of data bounds"):
        grpc_client.infer("lookup", grpc_inputs(idx=np.array([[10]])), client_timeout=CLIENT_TIMEOUT_S)

    # Same shapes, so Triton may batch the bad request with good ones: only the bad one must fail.
    feeds = [{"idx": np.array([[10 if i == 5 else i % 4]])} for i in range(16)]
    before = model_stats(grpc_client, "lookup")
    results = asyncio.run(_infer_concurrently(server.endpoints.grpc, "lookup", feeds))
    executions = model_stats(grpc_client, "lookup")[1] - before[1]
    for i, result in enumerate(results):
        if i == 5:
            assert isinstance(result, InferenceServerException), result
        else:
            assert isinstance(result, grpcclient.InferResult), result
            np.testing.assert_array_equal(result.as_numpy("emb"), TABLE[np.array([[i % 4]])])
    assert executions < len(feeds)
    assert grpc_client.is_model_ready("lookup")


def test_latency_grpc_round_trip_vs_in_process(
    grpc_client: grpcclient.InferenceServerClient, onnx_models: dict[str, Path]
) -> None:
    """Batch 1, sequential: what a Triton hop costs over onnxruntime in-process for a trivial model."""
    x, k = affine_inputs(1)
    inputs = grpc_inputs(x=x, k=k)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(onnx_models["affine"]), options, providers=["CPUExecutionProvider"])

    def timings_ms(call: Callable[[], object], n: int = 200) -> np.ndarray:
        for _ in range(20):
            call()
        samples = []
        for _ in range(n):
            started = time.perf_counter()
            call()
            samples.append((time.perf_counter() - started) * 1e3)
        return np.array(samples)

    triton = timings_ms(lambda: grpc_client.infer("affine_nowait", inputs, client_timeout=CLIENT_TIMEOUT_S))
    local = timings_ms(lambda: session.run(None, {"x": x, "k": k}))
    for name, ms in (("triton gRPC", triton), ("onnxruntime in-process", local)):
        print(f"{name}: median {np.median(ms):.3f} ms, p99 {np.percentile(ms, 99):.3f} ms")
    # Generous: catches a batcher that waits (a queue delay) on a lone request, not a slow machine.
    assert np.median(triton) < 50


def _children(pid: int) -> set[int]:
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.add(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    """Running, not merely a zombie waiting for a (container) init to reap it."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_stop_leaves_no_process_behind_even_with_a_client_connected(model_repo: Path) -> None:
    server = TritonServer(model_repo, exit_timeout_s=1).start()
    pid = server.pid
    assert pid is not None
    stubs = _children(pid)
    assert len(stubs) == 3, "one python stub per model instance"
    # An open HTTP keep-alive connection holds tritonserver's shutdown for the whole exit timeout.
    http = httpclient.InferenceServerClient(server.endpoints.http)
    assert http.is_server_ready()
    started = time.monotonic()
    server.stop()
    assert time.monotonic() - started < 8
    server.stop()  # idempotent
    http.close()
    assert not _alive(pid)
    assert not any(_alive(stub) for stub in stubs)
    with pytest.raises(TritonError, match="not running"):
        _ = server.endpoints


def test_stop_cleans_up_after_a_killed_server(model_repo: Path) -> None:
    others = set(Path("/dev/shm").glob("sarm_triton_*"))
    server = TritonServer(model_repo).start()
    pid = server.pid
    assert pid is not None
    stubs = _children(pid)
    regions = set(Path("/dev/shm").glob("sarm_triton_*")) - others
    assert regions, "the python backend keeps one shared-memory region per model instance"
    os.kill(pid, signal.SIGKILL)
    assert all(region.exists() for region in regions), "a killed server leaves its regions behind"
    server.stop()
    assert not any(_alive(stub) for stub in stubs)
    assert not any(region.exists() for region in regions)


def test_start_refuses_a_port_in_use(server: TritonServer, model_repo: Path) -> None:
    taken = int(server.endpoints.http.rsplit(":", 1)[1])
    with pytest.raises(TritonError, match=f"port {taken} .* already in use"):
        TritonServer(model_repo, http_port=taken).start()


def test_model_that_does_not_match_its_onnx_fails_startup_with_the_log(
    tmp_path: Path, onnx_models: dict[str, Path]
) -> None:
    inputs = [TensorSpec("features", "TYPE_FP32", [4]), TensorSpec("k", "TYPE_INT64", [1])]
    write_onnx_python_model(tmp_path, "broken", onnx_models["affine"], inputs, AFFINE_IO[1], Batching(8))
    with pytest.raises(TritonError, match=r"(?s)exited with code.*'features' is in config.pbtxt but not in model.onnx"):
        TritonServer(tmp_path, startup_timeout_s=60).start()


def test_cli_serves_in_the_foreground_until_sigint(model_repo: Path) -> None:
    ports = [str(port) for port in free_ports(3)]
    command = [sys.executable, "-m", "sarm.triton.server", "--model-repository", str(model_repo)]
    command += ["--grpc-port", ports[0], "--http-port", ports[1], "--metrics-port", ports[2]]
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as cli:
        assert cli.stdout is not None
        banner = cli.stdout.readline()
        assert f"grpc 127.0.0.1:{ports[0]}" in banner, banner + (cli.stderr.read() if cli.stderr else "")
        server_pid = int(banner.split("(pid ", 1)[1].split(")", 1)[0])
        client = grpcclient.InferenceServerClient(f"127.0.0.1:{ports[0]}")
        assert client.is_model_ready("affine")
        client.close()
        cli.send_signal(signal.SIGINT)
        assert cli.wait(60) == 0
    assert not _alive(server_pid)
