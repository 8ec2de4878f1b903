"""Prometheus metrics of both front ends: counters and gauges move on real calls, promtool accepts the exposition,
and a real Prometheus server scrapes the gateway and answers PromQL about it."""

from __future__ import annotations

import json
import queue
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from sarm.encoders.base import TextEncoder
from sarm_gateway.v1 import sarm_pb2 as pb
from tests.gateway_harness import (
    INSTRUCTION,
    TIMEOUT,
    RunningGateway,
    encoded,
    episode_frames,
    free_port,
    raw,
    window_request,
)

PROMETHEUS = shutil.which("prometheus")
PROMTOOL = shutil.which("promtool")
MISSING = "the Prometheus server is not installed (Debian package `prometheus`; `make system-packages` installs it)"


@pytest.fixture(scope="module")
def served(cpu_model_repo: Path, text_encoder: TextEncoder) -> Iterator[RunningGateway]:
    running = RunningGateway(cpu_model_repo, text_encoder, http_port=0)
    yield running
    running.close()


def scrape(running: RunningGateway) -> str:
    reply = httpx.get(f"{running.http_url}/metrics", timeout=TIMEOUT)
    assert reply.status_code == 200 and reply.headers["content-type"].startswith("text/plain")
    return reply.text


def value(text: str, name: str, **labels: str) -> float:
    """The sample `name` whose labels include `labels`; 0 when there is none yet."""
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and labels.items() <= sample.labels.items():
                return float(sample.value)
    return 0.0


def test_grpc_calls_move_request_engine_batcher_and_cache_metrics(served: RunningGateway) -> None:
    before = scrape(served)
    frames = [raw(f) for f in episode_frames(9, seed=70)]
    served.stub.ScoreWindow(window_request(frames), timeout=TIMEOUT)
    served.stub.ScoreWindow(window_request(frames), timeout=TIMEOUT)  # every frame, and the score, from the caches
    with pytest.raises(grpc.RpcError):
        served.stub.ScoreWindow(window_request(frames[:3]), timeout=TIMEOUT)
    served.stub.GetModelInfo(pb.GetModelInfoRequest(), timeout=TIMEOUT)
    after = scrape(served)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("sarm_grpc_requests_total", method="ScoreWindow", code="OK") == 2
    assert delta("sarm_grpc_requests_total", method="ScoreWindow", code="INVALID_ARGUMENT") == 1
    assert delta("sarm_grpc_requests_total", method="GetModelInfo", code="OK") == 1
    assert delta("sarm_grpc_request_duration_seconds_count", method="ScoreWindow") == 3
    assert delta("sarm_engine_latency_seconds_count", stage="total") == 3
    # Frames, then the window's score, each call; the refused call never looked.
    assert delta("sarm_engine_latency_seconds_count", stage="cache") == 4
    assert delta("sarm_engine_latency_seconds_count", stage="encode") == 1  # one batch of 9 new frames
    assert delta("sarm_engine_latency_seconds_count", stage="heads") == 1  # the repeat's score came from the cache
    assert delta("sarm_engine_latency_seconds_count", stage="queue") == 2  # the encode call and the heads call
    assert delta("sarm_batcher_batch_size_rows_sum", model="encoder") == 9
    assert delta("sarm_batcher_batch_size_rows_count", model="heads") == 1
    assert delta("sarm_cache_misses_total", tier="memory", kind="frame") == 9
    assert delta("sarm_cache_hits_total", tier="memory", kind="frame") == 9
    assert delta("sarm_cache_misses_total", tier="memory", kind="score") == 1
    assert delta("sarm_cache_hits_total", tier="memory", kind="score") == 1
    assert value(after, "sarm_cache_hits_total", tier="memory", kind="instruction") >= 1
    assert 'tier="redis"' not in after  # no Redis configured: no Redis series
    version = served.gateway.engine.version
    assert value(after, "sarm_model_info", model_version=version, backend="local") == 1
    assert value(after, "sarm_service_ready") == 1


def test_http_requests_are_counted_by_route_template(served: RunningGateway) -> None:
    before = scrape(served)
    with httpx.Client(base_url=served.http_url, timeout=TIMEOUT) as http:
        assert http.get("/v1/model").status_code == 200
        reply = http.post(
            "/v1/videos:score", data={"instruction": INSTRUCTION}, files={"video": ("v.mp4", b"not a video")}
        )
        assert reply.status_code == 422
        assert http.get("/v1/no/such/path").status_code == 404
        assert http.request("BREW", "/v1/model").status_code == 405
    after = scrape(served)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("sarm_http_requests_total", method="GET", route="/v1/model", code="200") == 1
    assert delta("sarm_http_requests_total", method="POST", route="/v1/videos:score", code="422") == 1
    assert delta("sarm_http_requests_total", method="GET", route="unmatched", code="404") == 1
    assert delta("sarm_http_requests_total", method="other", route="/v1/model", code="405") == 1
    assert delta("sarm_http_request_duration_seconds_count", method="POST", route="/v1/videos:score") == 1
    assert "/v1/no/such/path" not in after  # raw paths never become label values


def test_gauges_show_work_in_flight_queued_rows_open_streams_and_readiness(
    cpu_model_repo: Path, text_encoder: TextEncoder
) -> None:
    running = RunningGateway(cpu_model_repo, text_encoder, gated=True, http_port=0)
    try:
        running.run(running.gateway.engine.embed_instruction(INSTRUCTION))
        held = [
            running.stub.ScoreWindow.future(
                window_request([raw(f) for f in episode_frames(9, seed=s)]), timeout=TIMEOUT
            )
            for s in (71, 72)
        ]
        running.wait_in_flight(2)
        messages: queue.Queue[pb.StreamEpisodeRequest | None] = queue.Queue()
        messages.put(pb.StreamEpisodeRequest(open=pb.EpisodeOpen(instruction=INSTRUCTION, fps=10)))
        stream = running.stub.StreamEpisode(iter(messages.get, None), timeout=TIMEOUT)  # open until None
        deadline = time.monotonic() + TIMEOUT
        while True:  # one batch of 9 rows at the gate, the other call's 9 rows queued behind it, a stream open
            text = scrape(running)
            if (
                value(text, "sarm_batcher_queue_depth_rows", model="encoder") == 9
                and value(text, "sarm_grpc_active_streams") == 1
            ):
                break
            assert time.monotonic() < deadline, text
            time.sleep(0.05)
        assert value(text, "sarm_engine_in_flight_requests") == 2
        assert value(text, "sarm_service_ready") == 1
        running.open_gate()
        assert all(call.result(TIMEOUT).score.model_version for call in held)
        messages.put(None)
        assert list(stream) == []
        text = scrape(running)
        assert value(text, "sarm_engine_in_flight_requests") == 0 and value(text, "sarm_grpc_active_streams") == 0
        running.gateway.readiness.draining = True
        assert value(scrape(running), "sarm_service_ready") == 0
        running.gateway.readiness.draining = False
    finally:
        running.open_gate()
        running.close()


def test_without_an_http_port_only_metrics_and_probes_are_served(
    served: RunningGateway, cpu_model_repo: Path, text_encoder: TextEncoder
) -> None:
    running = RunningGateway(cpu_model_repo, text_encoder)  # no http_port: the metrics port (0: a free one)
    try:
        running.stub.ScoreWindow(window_request([encoded(f) for f in episode_frames(9, seed=73)]), timeout=TIMEOUT)
        with httpx.Client(base_url=running.http_url, timeout=TIMEOUT) as http:
            assert http.get("/livez").status_code == 200 and http.get("/readyz").status_code == 200
            assert value(http.get("/metrics").text, "sarm_grpc_requests_total", method="ScoreWindow") == 1
            for path in ("/v1/model", "/openapi.json", "/docs"):
                assert http.get(path).status_code == 404
        # Each gateway has its own registry, so several in one process (as here) don't collide.
        assert served.gateway.engine.metrics.registry is not running.gateway.engine.metrics.registry
    finally:
        running.close()


@pytest.mark.skipif(PROMTOOL is None, reason=MISSING)
def test_promtool_accepts_the_exposition(served: RunningGateway) -> None:
    served.stub.ScoreWindow(window_request([raw(f) for f in episode_frames(9, seed=74)]), timeout=TIMEOUT)
    httpx.get(f"{served.http_url}/v1/model", timeout=TIMEOUT)
    checked = subprocess.run(
        [str(PROMTOOL), "check", "metrics"], input=scrape(served), capture_output=True, text=True, timeout=60
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


class Prometheus:
    """A real Prometheus server scraping `target` every second, with its data in `root`."""

    def __init__(self, root: Path, target: str) -> None:
        self.port = free_port()
        config = root / "prometheus.yml"
        config.write_text(
            json.dumps(
                {  # JSON is YAML
                    "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                    "scrape_configs": [{"job_name": "sarm", "static_configs": [{"targets": [target]}]}],
                }
            )
        )
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = subprocess.Popen(
            [
                str(PROMETHEUS),
                f"--config.file={config}",
                f"--storage.tsdb.path={root / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--log.level=warn",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.wait_until(lambda: httpx.get(f"{self.url}/-/ready", timeout=2).status_code == 200, "ready")

    def wait_until(self, condition: object, what: str, seconds: float = 60) -> None:
        deadline = time.monotonic() + seconds
        while True:
            if self.process.poll() is not None:
                raise AssertionError(f"prometheus exited: {self.process.stderr.read() if self.process.stderr else ''}")
            try:
                if condition():  # type: ignore[operator]
                    return
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, f"prometheus: not {what} after {seconds} s"
            time.sleep(0.25)

    def query(self, promql: str) -> list[dict[str, object]]:
        reply = httpx.get(f"{self.url}/api/v1/query", params={"query": promql}, timeout=10).json()
        assert reply["status"] == "success", reply
        return reply["data"]["result"]  # type: ignore[no-any-return]

    def close(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@pytest.mark.skipif(PROMETHEUS is None, reason=MISSING)
@pytest.mark.timeout(180)
def test_a_real_prometheus_scrapes_the_gateway(served: RunningGateway, tmp_path: Path) -> None:
    prometheus = Prometheus(tmp_path, f"127.0.0.1:{served.gateway.http_port}")
    try:
        frames = [raw(f) for f in episode_frames(9, seed=75)]
        for _ in range(3):
            served.stub.ScoreWindow(window_request(frames), timeout=TIMEOUT)
        prometheus.wait_until(lambda: prometheus.query('up{job="sarm"} == 1'), "scraping the gateway")
        prometheus.wait_until(
            lambda: prometheus.query('sarm_grpc_requests_total{method="ScoreWindow",code="OK"}'), "seeing gRPC requests"
        )
        buckets = prometheus.query('sarm_engine_latency_seconds_bucket{stage="total"}')
        assert {series["metric"]["le"] for series in buckets} >= {"0.001", "+Inf"}  # type: ignore[index]
        # What a dashboard asks: p99 by stage over recent scrapes (needs two scrapes of a moving histogram).
        for _ in range(3):
            served.stub.ScoreWindow(window_request(frames), timeout=TIMEOUT)
            time.sleep(1)
        p99 = "histogram_quantile(0.99, sum by (le, stage) (rate(sarm_engine_latency_seconds_bucket[30s])))"
        prometheus.wait_until(
            lambda: any(s["metric"].get("stage") == "total" for s in prometheus.query(p99)),
            "computing latency quantiles",
        )
        assert prometheus.query("sarm_service_ready")[0]["value"][1] == "1"  # type: ignore[index]
    finally:
        prometheus.close()


def test_grpc_codes_of_cancelled_and_refused_calls(cpu_model_repo: Path, text_encoder: TextEncoder) -> None:
    running = RunningGateway(cpu_model_repo, text_encoder, gated=True, max_in_flight=1)
    try:
        held = running.stub.ScoreWindow.future(
            window_request([raw(f) for f in episode_frames(9, seed=76)]), timeout=0.5
        )
        running.wait_in_flight(1)
        with pytest.raises(grpc.RpcError) as refused:
            running.stub.ScoreWindow(window_request([raw(f) for f in episode_frames(9, seed=77)]), timeout=TIMEOUT)
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        with pytest.raises(grpc.RpcError):
            held.result(TIMEOUT)  # its deadline passes at the gate
        metrics = running.gateway.engine.metrics

        def count(code: str) -> float:
            return value(metrics.exposition().decode(), "sarm_grpc_requests_total", method="ScoreWindow", code=code)

        deadline = time.monotonic() + TIMEOUT
        # The server's deadline and the client's expire together: grpc may see either first.
        while count("DEADLINE_EXCEEDED") + count("CANCELLED") != 1:
            assert time.monotonic() < deadline, metrics.exposition().decode()  # every code counted, to see which
            time.sleep(0.02)
        assert count("RESOURCE_EXHAUSTED") == 1
    finally:
        running.open_gate()
        running.close()
