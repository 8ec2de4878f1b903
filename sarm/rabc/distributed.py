"""`sarm rabc --ray`: the episodes of one dataset labelled by a pool of Ray actors, assembled into the same
DatasetProgress, and so the same files, as the single-process run.

Actors, not tasks: a scorer (the scoring engine on the checkpoint's exported graphs, the dataset's frames source) takes
seconds to build, about what a short episode takes to score, so each worker is an actor that builds its scorer once
(EpisodeLabeller, on its first episode) and keeps it for every episode it is sent; a task would rebuild it each time
or lean on a process cache Ray does not promise.

Episodes go out longest first, at most PREFETCH at a time to each worker as it frees up, so one long episode or one
slow node does not hold up the end. A worker process that dies (killed, out of memory, node lost) is restarted by Ray
(max_restarts) and the calls it had not answered are sent again (max_task_retries); if it stays dead its episodes go
to the other workers. Each episode is scored from scratch wherever it runs, so the output is complete and unchanged.
An episode that raises is a problem of the input: it is not retried, and the error is the scorer's own.

Every worker must read the dataset and the checkpoint at the paths the driver gives (a shared volume on a cluster):
the driver sends absolute paths.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections import deque
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import ray
from ray.exceptions import RayActorError, RayTaskError

from sarm.rabc.files import write_progress
from sarm.rabc.pipeline import open_inputs, weigh
from sarm.rabc.progress import (
    Cancelled,
    DatasetProgress,
    EpisodeLabeller,
    EpisodeProgress,
    OnEpisode,
    ShouldStop,
)
from sarm.rabc.weights import RabcParams, RabcSummary
from sarm.scoring.options import EngineOptions

PREFETCH = 2  # calls queued on a worker: the next episode is there when one ends, without a round trip
POLL_SECONDS = 0.5  # how often the driver checks should_stop while waiting
CONNECT_SECONDS = 5.0
NODE_WAIT_SECONDS = 120.0  # for a first node with CPUs, when --ray-workers is not given


class RayLabellingError(RuntimeError):
    """The cluster could not be reached or could not finish the labelling; the message says why."""


@dataclass(frozen=True)
class RayOptions:
    address: str  # "auto" (RAY_ADDRESS, else the latest `ray start` on this machine), HOST:PORT or ray://HOST:PORT
    workers: int | None = None  # None: one per `threads` CPUs of the cluster, at most one per episode
    threads: int = 1  # CPUs (inference threads) of each worker
    retries: int = 3  # restarts of a dead worker, and re-sends of the calls it had not answered


@dataclass
class RayRun:
    progress: DatasetProgress
    workers: int
    scored_by: dict[int, int]  # episode index -> pid of the worker process that scored it
    seconds: dict[int, float]  # episode index -> seconds its worker took to score it


class LabelWorker:
    """One Ray actor: its process builds the labeller's scorer on the first episode and keeps it."""

    def __init__(self, labeller: EpisodeLabeller) -> None:
        self._labeller = labeller

    def provenance(self) -> dict[str, Any]:
        return self._labeller.provenance()  # builds the scorer: also the worker's readiness check

    def label(self, episode_index: int) -> tuple[int, float, EpisodeProgress]:
        start = time.perf_counter()
        progress = self._labeller.label(episode_index)
        return os.getpid(), time.perf_counter() - start, progress


def connect(address: str) -> bool:
    """Join the cluster at `address` unless this process already has; True when this call connected."""
    if ray.is_initialized():
        return False
    try:
        _check_reachable(address)
        ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)
    except (OSError, ValueError, RuntimeError) as error:  # ConnectionError is an OSError
        if _refused_token(error):
            raise RayLabellingError(
                f"the Ray cluster at {address!r} refused this driver's token: it uses token authentication; set "
                "RAY_AUTH_MODE=token and the cluster's token (RAY_AUTH_TOKEN, or ~/.ray/auth_token) here too"
            ) from error
        raise RayLabellingError(
            f"cannot reach a Ray cluster at {address!r} ({error}); start one with `ray start --head` and give its "
            "HOST:PORT, or `auto` where RAY_ADDRESS is set or a head runs on this machine"
        ) from error
    return True


def _refused_token(error: BaseException | None) -> bool:
    """Whether Ray's token authentication is behind `error` (Ray wraps it in its connection errors)."""
    seen = 0
    while error is not None and seen < 10:
        if type(error).__name__ == "AuthenticationError" or "InvalidAuthToken" in str(error):
            return True
        error, seen = error.__cause__ or error.__context__, seen + 1
    return False


def _check_reachable(address: str) -> None:
    """Fail in seconds where ray.init would retry an unreachable head for minutes: resolve the address by Ray's own
    rules (`auto`, localhost) and open a TCP connection to it."""
    from ray._private.services import canonicalize_bootstrap_address  # pinned ray: no public equivalent

    target = address.removeprefix("ray://") if address.startswith("ray://") else canonicalize_bootstrap_address(address)
    if target is None:
        raise ValueError("it names no running cluster")
    host, _, port = target.rpartition(":")
    socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_SECONDS).close()


def label_on_ray(
    labeller: EpisodeLabeller,
    options: RayOptions,
    on_episode: OnEpisode | None = None,
    should_stop: ShouldStop | None = None,
) -> RayRun:
    """Every episode of `labeller.dataset`, scored by Ray workers; see the module docstring.

    `on_episode(done, total)` is called once a worker has checked the inputs (done = 0), then after each episode.
    `should_stop()` is polled while waiting; it raises Cancelled. The provenance records `ray: {workers: N}`.
    """
    metas = open_inputs(labeller.dataset, labeller.checkpoint).episodes
    if not metas:
        raise ValueError(f"{labeller.dataset} has no episode to label")
    labeller = replace(labeller, dataset=labeller.dataset.resolve(), checkpoint=labeller.checkpoint.resolve())
    expected = [meta.index for meta in metas]
    connected = connect(options.address)
    try:
        pool = _Pool(labeller, options, len(expected))
        try:
            return pool.run(sorted(metas, key=lambda m: -m.length), expected, on_episode, should_stop)
        finally:
            pool.close()
    finally:
        if connected:
            ray.shutdown()


class _Pool:
    """The workers and the episodes in flight on each; the driver's side of the labelling."""

    def __init__(self, labeller: EpisodeLabeller, options: RayOptions, episodes: int) -> None:
        if options.threads < 1 or (options.workers is not None and options.workers < 1):
            raise ValueError("--ray-workers and --threads must be >= 1")
        self.workers = min(options.workers or _capacity(options.threads), episodes)
        self._labeller, self._retries = labeller, options.retries
        actor = ray.remote(num_cpus=options.threads, max_restarts=options.retries, max_task_retries=options.retries)(
            LabelWorker
        )
        labeller = replace(labeller, threads=options.threads)
        self._actors: list[Any] = [actor.remote(labeller) for _ in range(self.workers)]
        self._waiting: dict[Any, int] = {a.provenance.remote(): i for i, a in enumerate(self._actors)}  # not ready
        self._in_flight: dict[Any, tuple[int, int]] = {}  # ref -> (worker, episode)
        self._load = [0] * self.workers
        self._failures: dict[int, int] = {}
        self._alive = set(range(self.workers))

    def run(
        self, order: list[Any], expected: list[int], on_episode: OnEpisode | None, should_stop: ShouldStop | None
    ) -> RayRun:
        queue: deque[int] = deque(meta.index for meta in order)
        provenance: dict[str, Any] | None = None
        ready: list[int] = []
        results: list[EpisodeProgress] = []
        scored_by: dict[int, int] = {}
        seconds: dict[int, float] = {}
        total = len(expected)
        while len(results) < total:
            if should_stop is not None and should_stop():
                raise Cancelled(f"stopped after {len(results)} of {total} episodes")
            for worker in ready:
                while queue and worker in self._alive and self._load[worker] < PREFETCH:
                    self._send(worker, queue.popleft())
            if not self._waiting and not self._in_flight:
                raise RayLabellingError(f"every Ray worker died; {total - len(results)} episode(s) not labelled")
            done, _ = ray.wait([*self._waiting, *self._in_flight], num_returns=1, timeout=POLL_SECONDS)
            for ref in done:
                if ref in self._waiting:
                    worker = self._waiting.pop(ref)
                    found = self._get(ref, worker, None)
                    if found is None:
                        continue
                    if provenance is None:
                        provenance = found
                        if on_episode is not None:
                            on_episode(0, total)
                    elif found != provenance:
                        raise RayLabellingError(_disagreement(provenance, found))
                    ready.append(worker)
                    continue
                worker, episode = self._in_flight.pop(ref)
                self._load[worker] -= 1
                answer = self._get(ref, worker, episode)
                if answer is None:
                    queue.appendleft(episode)  # its worker is gone for good: another one scores it
                    continue
                scored_by[episode], seconds[episode], progress = answer
                results.append(progress)
                if on_episode is not None:
                    on_episode(len(results), total)
        assert provenance is not None  # a result implies a ready worker
        provenance = {**provenance, "ray": {"workers": self.workers}}
        return RayRun(self._labeller.assemble(results, provenance, expected), self.workers, scored_by, seconds)

    def _send(self, worker: int, episode: int) -> None:
        self._in_flight[self._actors[worker].label.remote(episode)] = (worker, episode)
        self._load[worker] += 1

    def _get(self, ref: Any, worker: int, episode: int | None) -> Any:
        """The call's answer; None when its worker died past its restarts (it leaves the pool)."""
        try:
            return ray.get(ref)
        except RayTaskError as error:  # the scorer raised: the input's problem, with the scorer's own message
            cause = getattr(error, "cause", None)
            raise (cause if isinstance(cause, Exception) else RayLabellingError(str(error))) from error
        except RayActorError as error:
            self._alive.discard(worker)
            if episode is not None:
                self._failures[episode] = self._failures.get(episode, 0) + 1
                if self._failures[episode] > self._retries:
                    raise RayLabellingError(
                        f"episode {episode} was lost with its worker {self._failures[episode]} times: {error}"
                    ) from error
            return None

    def close(self) -> None:
        for actor in self._actors:
            ray.kill(actor, no_restart=True)


def _capacity(threads: int) -> int:
    """Workers of `threads` CPUs the cluster holds; waits a while for a first worker node (a head that labels
    nothing, as on KubeRay, may be up before its workers)."""
    deadline = time.monotonic() + NODE_WAIT_SECONDS
    while (capacity := int(ray.cluster_resources().get("CPU", 0) // threads)) < 1:
        if time.monotonic() > deadline:
            raise RayLabellingError(
                f"the Ray cluster has no node with {threads} CPU(s) for a worker after {NODE_WAIT_SECONDS:.0f} s"
            )
        time.sleep(1)
    return capacity


def _disagreement(first: dict[str, Any], other: dict[str, Any]) -> str:
    keys = sorted(k for k in first.keys() | other.keys() if first.get(k) != other.get(k))
    details = "; ".join(f"{k}: {first.get(k)!r} vs {other.get(k)!r}" for k in keys)
    return f"Ray workers see different inputs ({details}): every node must read the same dataset and checkpoint"


def run_rabc_on_ray(
    dataset_dir: Path,
    checkpoint: Path,
    params: RabcParams,
    out_dir: Path,
    options: RayOptions,
    stride: int = 1,
    on_episode: OnEpisode | None = None,
    should_stop: ShouldStop | None = None,
    engine: EngineOptions | None = None,
    head: str = "sparse",
    device: str = "cpu",
) -> tuple[RabcSummary, RayRun]:
    """`run_rabc` with the scoring spread over a Ray cluster: the same checks, the same files. Each worker opens
    its own engine with `engine` (ONNX Runtime in the worker, or a client of the Triton server it names), on `device`
    as the worker resolves it (auto: its own GPU if it sees one)."""
    labeller = EpisodeLabeller(dataset_dir, checkpoint, stride, options=engine or EngineOptions(), device=device)
    run = label_on_ray(labeller, options, on_episode, should_stop)
    write_progress(run.progress, out_dir)
    return weigh(run.progress, params, out_dir, head), run
