"""RA-BC weights of a dataset, computed by the service: its HTTP jobs API (`/v1/rabc/jobs`) through the standard
library, and the weights file read with pyarrow (the `sarm-client[trainer]` extra).

    from sarm_client import RabcJobs

    jobs = RabcJobs("http://sarm:8000", token=os.environ["SARM_TOKEN"])  # a token of the `trainer` role
    weights = jobs.weights("pick-place", chunk_size=10)  # the dataset, relative to the server's SARM_DATA_ROOT
    w = weights.for_indices(batch["index"])  # each sample's weight, by its frame's global index

Step by step: `submit` → `wait` (or `status`) → `download`; `cancel` stops a job between episodes.
"""

from __future__ import annotations

import contextlib
import http.client
import io
import json
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from types import ModuleType
from typing import Any, Literal

import numpy as np

from sarm_client._base import Attempts, ClientConfig
from sarm_client.config import NO_RETRY, Deadline, Retry, Timeout
from sarm_client.errors import DeadlineExceeded, JobFailed, SarmError, Unavailable, from_http_error

Stats = Literal["global", "running"]
ResultName = Literal["weights", "progress"]  # rabc_weights.parquet, sarm_progress.parquet
JOBS_PATH = "/v1/rabc/jobs"
ACTIVE_STATES = ("queued", "running")
# rabc_weights.parquet as the service writes it (sarm.rabc.files): its columns, and the schema metadata key of
# its parameters, μ, σ and progress provenance (JSON).
WEIGHTS_COLUMNS = ("index", "episode_index", "frame_index", "delta", "weight")
WEIGHTS_METADATA_KEY = b"sarm.rabc"


@dataclass(frozen=True)
class RabcJob:
    """A job as the server last reported it."""

    id: str
    dataset: str
    state: str  # queued | running | succeeded | failed | cancelled
    params: dict[str, Any]  # chunk_size, kappa, eps, stats, stride
    episodes_done: int
    episodes_total: int | None  # known once the job has opened the dataset
    error: str | None  # why it failed
    summary: dict[str, Any] | None  # once succeeded: frames, mean_weight, zero_weight_share, delta_mean, ...
    results: dict[str, str]  # once succeeded: the download path of each result

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RabcJob:
        return cls(
            data["id"],
            data["dataset"],
            data["state"],
            data["params"],
            data["episodes_done"],
            data["episodes_total"],
            data["error"],
            data["summary"],
            data["results"],
        )

    @property
    def active(self) -> bool:
        """Queued or running: its state will still change."""
        return self.state in ACTIVE_STATES


JobProgress = Callable[[RabcJob], None]


def _parquet() -> ModuleType:
    try:
        import pyarrow.parquet as pq
    except ImportError as error:
        raise ImportError("reading RA-BC weights needs pyarrow: pip install 'sarm-client[trainer]'") from error
    return pq


@dataclass(frozen=True, eq=False)
class RabcWeights:
    """Every frame's RA-BC weight for one dataset (an rabc_weights.parquet), one row per frame."""

    index: np.ndarray  # the frame's global index in the dataset (LeRobot's `index`, what a dataloader yields)
    episode_index: np.ndarray
    frame_index: np.ndarray  # within its episode
    delta: np.ndarray  # r: the progress gain over one action chunk
    weight: np.ndarray  # w in [0, 1]
    metadata: dict[str, Any]  # params (chunk_size, kappa, eps, stats), mu, sigma, progress (its provenance)

    def __post_init__(self) -> None:
        lengths = {name: len(getattr(self, name)) for name in WEIGHTS_COLUMNS}
        if len(set(lengths.values())) != 1:
            raise ValueError(f"the columns of RA-BC weights must have one length, got {lengths}")
        if not len(self.index):
            raise ValueError("RA-BC weights of no frame")
        if len(np.unique(self.index)) != len(self.index):
            raise ValueError("RA-BC weights hold a frame index twice: a frame's weight would be ambiguous")

    @classmethod
    def from_parquet(cls, source: bytes | str | Path) -> RabcWeights:
        """Read an rabc_weights.parquet: its bytes (`RabcJobs.download`) or its path (`sarm rabc --out`)."""
        table = _parquet().read_table(io.BytesIO(source) if isinstance(source, bytes) else source)
        missing = [name for name in WEIGHTS_COLUMNS if name not in table.column_names]
        if missing:
            raise ValueError(f"no column(s) {missing}: not an rabc_weights.parquet")
        stored = table.schema.metadata or {}
        metadata = json.loads(stored[WEIGHTS_METADATA_KEY]) if WEIGHTS_METADATA_KEY in stored else {}
        columns: dict[str, Any] = {name: table.column(name).to_numpy() for name in WEIGHTS_COLUMNS}
        return cls(**columns, metadata=metadata)

    @property
    def params(self) -> dict[str, Any]:
        """The RA-BC parameters the weights were computed with: chunk_size, kappa, eps, stats."""
        return dict(self.metadata.get("params", {}))

    @cached_property
    def _sorted(self) -> tuple[np.ndarray, np.ndarray]:
        """(the frame indices sorted, the row of each): a binary search per lookup, whatever the row order."""
        order = np.argsort(self.index, kind="stable")
        return self.index[order], order

    def for_indices(self, indices: Any) -> np.ndarray:
        """The weight of each frame in `indices` (global frame indices in any shape: a LeRobot batch's
        `batch["index"]` as a CPU tensor, an array, a list), in their shape. KeyError for a frame these weights do
        not hold: they belong to another dataset, or to another version of it."""
        wanted = np.asarray(indices)
        if wanted.size and wanted.dtype.kind not in "iu":
            raise TypeError(f"frame indices must be integers, not {wanted.dtype}")
        index, order = self._sorted
        at = np.minimum(np.searchsorted(index, wanted), len(index) - 1)
        known = index[at] == wanted
        if not known.all():
            unknown = np.unique(wanted[~known])
            raise KeyError(
                f"{len(unknown)} frame index(es) without an RA-BC weight, e.g. {unknown[:5].tolist()}: "
                f"these weights hold frames {index[0]}..{index[-1]} ({len(index)} frames); were they "
                "computed for another dataset, or another version of it?"
            )
        return self.weight[order[at]]


def _detail(body: bytes, fallback: str) -> str:
    """The server's message in an error reply: FastAPI's {"detail": text}, or its list of validation errors."""
    try:
        detail = json.loads(body)["detail"]
    except (ValueError, KeyError, TypeError):
        return body.decode(errors="replace").strip() or fallback
    if isinstance(detail, list):  # [{"loc": ["body", "chunk_size"], "msg": "...", ...}, ...]
        return "; ".join(
            f"{'.'.join(map(str, item['loc']))}: {item['msg']}"
            if isinstance(item, dict) and {"loc", "msg"} <= item.keys()
            else str(item)
            for item in detail
        )
    return str(detail)


class RabcJobs:
    """Client of the gateway's RA-BC jobs API (`sarm serve --http-port`), with a token of the `trainer` role.

    `timeout.call` bounds each HTTP call, its retries included; idempotent calls (status, cancel, download) are
    retried on 429/503 and unreachable servers as `retry` says, so a trainer's wait outlives a replica's restart.
    `ca_file` (PEM) verifies an https:// server (default: the system's roots)."""

    def __init__(
        self,
        base_url: str,
        *,
        token: str | None = None,
        timeout: Timeout = Timeout(),
        retry: Retry = Retry(),
        ca_file: str | Path | None = None,
    ) -> None:
        scheme = urllib.parse.urlsplit(base_url).scheme
        if scheme not in ("http", "https"):  # urllib would also open file:// and ftp:// URLs
            raise ValueError(f"base_url must be the gateway's http:// or https:// URL, not {base_url!r}")
        if ca_file is not None and scheme != "https":
            raise ValueError("ca_file verifies an https:// server: the URL is http://")
        self.base_url = base_url.rstrip("/")
        self._config = ClientConfig(token, timeout, retry)
        self._headers = dict(self._config.metadata)
        self._tls = ssl.create_default_context(cafile=str(ca_file)) if ca_file is not None else None

    def _once(self, method: str, path: str, body: bytes | None, timeout: float | None) -> bytes:
        headers = self._headers | ({"content-type": "application/json"} if body is not None else {})
        request = urllib.request.Request(self.base_url + path, body, headers, method=method)
        try:
            with urllib.request.urlopen(request, timeout=timeout, context=self._tls) as reply:
                data: bytes = reply.read()
                return data
        except urllib.error.HTTPError as error:  # the server answered with an error status
            with error:
                message = _detail(error.read(), f"HTTP {error.code} {error.reason}")
                raise from_http_error(error.code, message, error.headers.get("Retry-After")) from error
        except urllib.error.URLError as error:  # no answer: refused, unknown host, TLS, or a connect timeout
            if isinstance(error.reason, TimeoutError):
                raise DeadlineExceeded(f"{method} {path}: no connection within {timeout} s") from error
            raise Unavailable(f"cannot reach {self.base_url}: {error.reason}") from error
        except TimeoutError as error:
            raise DeadlineExceeded(f"{method} {path}: no reply within {timeout} s") from error
        except (OSError, http.client.HTTPException) as error:  # the connection broke mid-reply
            raise Unavailable(f"{method} {path}: the connection to {self.base_url} broke: {error!r}") from error

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None, idempotent: bool = True) -> bytes:
        deadline = self._config.deadline(None)
        attempts = Attempts(self._config.retry if idempotent else NO_RETRY, deadline)
        data = json.dumps(body).encode() if body is not None else None
        while True:
            try:
                return self._once(method, path, data, deadline.remaining())
            except SarmError as error:
                wait = attempts.failed(error, error.__cause__)
            time.sleep(wait)

    def _job(self, method: str, path: str, body: dict[str, Any] | None = None, idempotent: bool = True) -> RabcJob:
        data = self._call(method, path, body, idempotent)
        try:
            return RabcJob.from_json(json.loads(data))
        except (ValueError, KeyError, TypeError) as error:
            raise SarmError(
                f"{method} {path}: the reply is not a job ({error!r}): is {self.base_url} the gateway's HTTP port?"
            ) from error

    @staticmethod
    def _path(job_id: str) -> str:
        return f"{JOBS_PATH}/{urllib.parse.quote(job_id, safe='')}"

    def submit(
        self,
        dataset: str,
        chunk_size: int,
        *,
        kappa: float = 0.01,
        stride: int = 1,
        stats: Stats = "global",
        eps: float = 1e-6,
    ) -> RabcJob:
        """Start a job: weights for `dataset` (a folder relative to the server's data root) with action chunks of
        `chunk_size` frames, progress scored every `stride` frames. Never retried: a retry could start it twice."""
        body = {
            "dataset": dataset,
            "chunk_size": chunk_size,
            "kappa": kappa,
            "eps": eps,
            "stats": stats,
            "stride": stride,
        }
        return self._job("POST", JOBS_PATH, body, idempotent=False)

    def status(self, job_id: str) -> RabcJob:
        return self._job("GET", self._path(job_id))

    def cancel(self, job_id: str) -> RabcJob:
        """Ask the job to stop (it ends `cancelled` after the episode in hand); a finished job stays as it is."""
        return self._job("POST", f"{self._path(job_id)}:cancel")

    def wait(
        self, job_id: str, *, poll_s: float = 1.0, on_progress: JobProgress | None = None, timeout: float | None = None
    ) -> RabcJob:
        """Poll the job every `poll_s` s until it ends, and return it once succeeded. `on_progress(job)` is called
        whenever its state or count of episodes done changes. JobFailed when it failed (with the server's reason)
        or was cancelled; DeadlineExceeded when `timeout` s pass first (the job goes on: `cancel` stops it)."""
        if not poll_s > 0:
            raise ValueError(f"poll_s must be a positive number of seconds, not {poll_s!r}")
        deadline = Deadline(timeout)
        seen: tuple[str, int, int | None] | None = None
        while True:
            job = self.status(job_id)
            if on_progress is not None and seen != (job.state, job.episodes_done, job.episodes_total):
                seen = (job.state, job.episodes_done, job.episodes_total)
                on_progress(job)
            if job.state == "succeeded":
                return job
            if not job.active:
                reason = f"failed: {job.error}" if job.state == "failed" else f"ended {job.state}"
                raise JobFailed(f"RA-BC job {job.id} on {job.dataset!r} {reason}", job)
            remaining = deadline.remaining()
            if remaining == 0:
                raise DeadlineExceeded(
                    f"RA-BC job {job.id} is still {job.state} after {timeout} s "
                    f"({job.episodes_done}/{job.episodes_total or '?'} episodes); it goes on"
                )
            time.sleep(poll_s if remaining is None else min(poll_s, remaining))

    def download(self, job_id: str, name: ResultName = "weights") -> bytes:
        """A succeeded job's result file: rabc_weights.parquet ("weights") or sarm_progress.parquet ("progress").
        Conflict before it has succeeded."""
        return self._call("GET", f"{self._path(job_id)}/results/{urllib.parse.quote(name, safe='')}")

    def compute(
        self,
        dataset: str,
        chunk_size: int,
        *,
        kappa: float = 0.01,
        stride: int = 1,
        stats: Stats = "global",
        eps: float = 1e-6,
        poll_s: float = 1.0,
        on_progress: JobProgress | None = None,
        timeout: float | None = None,
    ) -> tuple[RabcJob, bytes]:
        """A whole job: submit, wait, download: the succeeded job (its `summary`) and its rabc_weights.parquet.
        A wait given up (timeout, Ctrl-C, the server gone) cancels the job, so that no replica computes weights
        nobody fetches."""
        job = self.submit(dataset, chunk_size, kappa=kappa, stride=stride, stats=stats, eps=eps)
        try:
            job = self.wait(job.id, poll_s=poll_s, on_progress=on_progress, timeout=timeout)
        except BaseException:
            with contextlib.suppress(SarmError):  # the error that stopped the wait is the one to report
                self.cancel(job.id)
            raise
        return job, self.download(job.id, "weights")

    def weights(
        self,
        dataset: str,
        chunk_size: int,
        *,
        kappa: float = 0.01,
        stride: int = 1,
        stats: Stats = "global",
        eps: float = 1e-6,
        poll_s: float = 1.0,
        on_progress: JobProgress | None = None,
        timeout: float | None = None,
    ) -> RabcWeights:
        """`compute`'s weights, read (needs pyarrow: `sarm-client[trainer]`)."""
        _parquet()  # a missing extra fails before the job, not after it
        _, data = self.compute(
            dataset,
            chunk_size,
            kappa=kappa,
            stride=stride,
            stats=stats,
            eps=eps,
            poll_s=poll_s,
            on_progress=on_progress,
            timeout=timeout,
        )
        return RabcWeights.from_parquet(data)
