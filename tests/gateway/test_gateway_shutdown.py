"""Shutdown without lost work: SIGTERM to a real gateway process with a full in-flight bound, every call's status
counted; and the admission rules behind it (refusal during a drain, the time bound), on their own."""

from __future__ import annotations

import asyncio
import collections
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest

from sarm.encoders.base import TextEncoder
from sarm.scoring.batcher import MicroBatcher
from sarm_gateway.admission import Admission, Draining
from sarm_gateway.errors import BackendUnavailable, Overloaded
from sarm_gateway.v1 import sarm_pb2_grpc as pb_grpc
from tests.gateway_harness import RunningGateway, episode_frames, raw, window_request

ROOT = Path(__file__).resolve().parents[2]
CALLS = 64  # the in-flight bound, all taken by one burst
LATE_CALLS = 8  # sent once SIGTERM has been sent
DRAIN_S = 12.0
TIMEOUT = 90.0


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_admission_refuses_with_unavailable_once_draining() -> None:
    work = Admission(4, 100)
    with work.slot(9):
        work.draining = True
        with pytest.raises(Draining, match="draining") as caught, work.slot(9):
            pass
    assert isinstance(caught.value, Draining) and work.in_flight == 0


def test_admission_refuses_work_that_would_not_finish_within_the_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock()
    monkeypatch.setattr("sarm_gateway.admission.time.monotonic", clock)
    work = Admission(64, 100, budget_s=1.0)
    with work.slot(10):  # the first call warms up (sessions, the instruction): not measured
        clock.now += 30.0
    assert work.queue_seconds(10) is None  # unmeasured: only the count bound applies
    with work.slot(10), work.slot(10):
        clock.now += 1.0  # 20 frames in 1 s of busy time: 0.05 s per frame once they complete
    clock.now += 5.0  # idle time is not busy time
    with work.slot(10), work.slot(10):  # 20 frames × 0.05 s = 1.0 s: within the budget
        with pytest.raises(Overloaded) as caught, work.slot(1):  # 21 frames: 1.05 s
            pass
        assert caught.value.retry_after_ms == 100  # the excess (50 ms) is under the floor
        with pytest.raises(Overloaded) as caught, work.slot(40):  # 60 frames: 3 s, 2 s over
            pass
        assert caught.value.retry_after_ms == 2000 and "budget" in str(caught.value)
    with work.slot(100):  # alone: always admitted, however long it takes
        pass
    assert (work.in_flight, work.frames) == (0, 0)


def test_failed_work_and_unknown_sized_work_do_not_speed_up_the_estimate(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock()
    monkeypatch.setattr("sarm_gateway.admission.time.monotonic", clock)
    work = Admission(64, 100, budget_s=1.0)
    with pytest.raises(RuntimeError), work.slot(100):
        clock.now += 1.0
        raise RuntimeError("bad input")
    with work.slot(0):  # a video upload: frames unknown
        clock.now += 1.0
    assert work.queue_seconds(10) is None  # nothing measured yet


def test_a_closed_batcher_fails_its_waiting_callers_with_unavailable() -> None:
    async def run() -> list[BaseException | tuple[np.ndarray, ...]]:
        never = asyncio.Event()

        async def stuck(x: np.ndarray) -> tuple[np.ndarray]:
            await never.wait()  # a batch that is still running when the engine closes
            return (x,)

        batcher = MicroBatcher(stuck, max_batch=1, max_delay_s=0)
        calls = [asyncio.create_task(batcher(np.zeros((1, 1)))) for _ in range(3)]  # one running, two queued
        await asyncio.sleep(0.05)
        await batcher.close()
        return await asyncio.wait_for(asyncio.gather(*calls, return_exceptions=True), 10)

    results = asyncio.run(run())
    assert all(isinstance(r, BackendUnavailable) and "shut down" in str(r) for r in results), results


def test_during_a_drain_new_calls_get_unavailable_and_http_503_while_the_call_in_flight_finishes(
    cpu_model_repo: Path, text_encoder: TextEncoder
) -> None:
    running = RunningGateway(cpu_model_repo, text_encoder, gated=True, http_port=0)
    stopping = None
    try:
        held = running.stub.ScoreWindow.future(
            window_request([raw(f) for f in episode_frames(9, seed=70)]), timeout=TIMEOUT
        )
        running.wait_in_flight(1)
        stopping = asyncio.run_coroutine_threadsafe(running.gateway.stop(), running.loop)
        deadline = time.monotonic() + TIMEOUT
        while not running.gateway.readiness.draining:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        with pytest.raises(grpc.RpcError) as caught:
            running.stub.ScoreWindow(window_request([raw(f) for f in episode_frames(9, seed=71)]), timeout=TIMEOUT)
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE and "draining" in (caught.value.details() or "")
        with httpx.Client(base_url=running.http_url, timeout=TIMEOUT) as http:
            reply = http.get("/v1/model")
            assert reply.status_code == 503 and reply.headers["retry-after"] == "1" and "draining" in reply.text
            assert http.get("/readyz").status_code == 503
            assert http.get("/livez").status_code == 200  # probes and scrapes still answer
        running.open_gate()
        assert held.result(TIMEOUT).score.stage_name  # the admitted call finished
        stopping.result(TIMEOUT)
    finally:
        running.open_gate()
        if stopping is not None:
            stopping.result(TIMEOUT)
            running.gateway.server = None  # type: ignore[assignment]  # already stopped: close() must not stop it again
        running.close()


def _serve(repo: Path, **env: str) -> tuple[subprocess.Popen[str], int, list[str]]:
    """`sarm serve` on a free port; the process, its gRPC port and (drained in a thread) its stderr lines."""
    full = {
        **os.environ,
        "SARM_GRPC_HOST": "127.0.0.1",
        "SARM_METRICS_PORT": "0",
        "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "service")]),
        **env,
    }
    process = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from sarm.cli import app; app()",
            "serve",
            "--model-repo",
            str(repo),
            "--grpc-port",
            "0",
        ],
        env=full,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stderr is not None
    lines: list[str] = []
    while not (match := re.search(r"on gRPC 127\.0\.0\.1:(\d+)", "".join(lines))):
        line = process.stderr.readline()
        assert line, f"sarm serve exited with {process.wait()}: {''.join(lines)}"
        lines.append(line)
    threading.Thread(target=lambda: lines.extend(process.stderr or ()), daemon=True).start()
    return process, int(match.group(1)), lines


@pytest.mark.timeout(600)  # the session fixtures export a model first: minutes on a busy machine
def test_sigterm_with_a_full_in_flight_bound_cancels_nothing_and_finishes_what_it_admitted(
    cpu_model_repo: Path,
) -> None:
    process, port, log = _serve(cpu_model_repo, SARM_MAX_IN_FLIGHT=str(CALLS), SARM_DRAIN_SECONDS=str(DRAIN_S))
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = pb_grpc.RewardServiceStub(channel)
            for seed in range(3):  # the instruction's embedding, and a first measure of the throughput
                stub.ScoreWindow(window_request([raw(f) for f in episode_frames(9, seed=1000 + seed)]), timeout=TIMEOUT)
            requests = [window_request([raw(f) for f in episode_frames(9, seed=seed)]) for seed in range(CALLS)]
            late = [window_request([raw(f) for f in episode_frames(9, seed=CALLS + s)]) for s in range(LATE_CALLS)]
            done: dict[int, float] = {}
            calls = []
            for i, request in enumerate(requests):
                call = stub.ScoreWindow.future(request, timeout=TIMEOUT)
                call.add_done_callback(lambda _, i=i: done.setdefault(i, time.monotonic()))
                calls.append(call)
            while not done and len(done) < CALLS:  # the burst has reached the server: one call is answered
                time.sleep(0.005)
            signalled = time.monotonic()
            process.send_signal(signal.SIGTERM)
            late_calls = [stub.ScoreWindow.future(request, timeout=TIMEOUT) for request in late]
            outcomes = [_outcome(call) for call in calls]
            late_outcomes = [_outcome(call) for call in late_calls]
        assert process.wait(timeout=DRAIN_S + 60) == 0, "".join(log)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()

    counts = collections.Counter(code for code, _ in outcomes + late_outcomes)
    report = f"{counts}; details: {collections.Counter(d[:80] for _, d in outcomes + late_outcomes)}"
    assert grpc.StatusCode.CANCELLED not in counts, report
    assert set(counts) <= {grpc.StatusCode.OK, grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED}, report
    # Refusals say why: over the bound (before the signal), or draining. A call cut at the end of the drain (an
    # admitted call that did not finish) would be UNAVAILABLE with grpc's own details instead.
    for code, details in outcomes + late_outcomes:
        if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
            assert "server busy" in details, report
        if code == grpc.StatusCode.UNAVAILABLE:
            assert "draining" in details or _unreachable(details), report
    ok = [i for i, (code, _) in enumerate(outcomes) if code == grpc.StatusCode.OK]
    assert ok, report
    assert all(done[i] - signalled < DRAIN_S for i in ok), report  # every admitted call finished within the drain
    # Calls sent after the signal found the gateway draining (or, if it had already finished, gone): none ran.
    assert all(code == grpc.StatusCode.UNAVAILABLE for code, _ in late_outcomes), report


def _outcome(call: grpc.Future) -> tuple[grpc.StatusCode, str]:
    error = call.exception(timeout=TIMEOUT)
    if error is None:
        return grpc.StatusCode.OK, ""
    assert isinstance(error, grpc.RpcError)
    return error.code(), error.details() or ""


def _unreachable(details: str) -> bool:
    """The gateway had stopped listening (its drain was over): the call never reached it."""
    return bool(re.search(r"connect|Connection refused|Socket closed|GOAWAY", details, re.IGNORECASE))
