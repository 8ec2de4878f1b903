"""`sarm rabc --ray`: a real Ray head on loopback (one node, two worker processes) labels a small dataset; the files
are those of the single-process run, a worker killed mid-run is restarted and the output is still complete, and
bad addresses fail in one line.

The cluster is started once for the module with `ray start --head --block` in its own session, and torn down by
ending that command (which stops what it started); any process left in the session is killed by its pid, and the
teardown checks none is left. Not `ray stop`: it would stop every Ray on this shared machine.
"""

from __future__ import annotations

import json
import os
import pickle
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from sarm.cli import app
from sarm.rabc.files import PROGRESS_FILE, SUMMARY_FILE, WEIGHTS_FILE, read_progress
from sarm.rabc.progress import EpisodeLabeller, EpisodeProgress
from sarm.rabc.weights import rabc_weights
from sarm.triton import free_ports
from tests.conftest import synthetic_episode, write_dataset

# Ray on loopback only (it would otherwise resolve 127.0.0.1 to the machine's outward address), no usage reports,
# and token authentication with a token of this module's own (not ~/.ray/auth_token): the cluster and every driver
# get it from the environment. Set before ray is imported: it reads them once, and this process is a driver too.
RAY_ENV = {
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_AUTH_MODE": "token",
    "RAY_AUTH_TOKEN": secrets.token_hex(32),
}
os.environ.update(RAY_ENV)
ray = pytest.importorskip("ray", reason="the [ray] extra is not installed")
from sarm.rabc.distributed import RayOptions, label_on_ray  # noqa: E402 (needs ray)

LENGTHS = (12, 20, 9, 16, 14, 11)  # 6 short episodes: a kill lands while several are still to do
WORKERS = 2
START_SECONDS = 180
BIN = Path(sys.executable).parent
runner = CliRunner()


@dataclass
class Cluster:
    address: str
    process: subprocess.Popen[bytes]

    def processes(self) -> dict[int, str]:
        """pid -> command line of every live process the head's `ray start` session holds."""
        found = {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                if os.getsid(int(entry.name)) != self.process.pid:
                    continue
                found[int(entry.name)] = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
            except (ProcessLookupError, FileNotFoundError, PermissionError):
                continue
        return {pid: cmd for pid, cmd in found.items() if cmd}  # zombies have no command line

    def label_workers(self) -> list[int]:
        return sorted(pid for pid, cmd in self.processes().items() if cmd.startswith("ray::LabelWorker"))

    def busy_worker(self, seconds: float = 60) -> int:
        """A label worker in the middle of an episode (Ray titles it `ray::LabelWorker.label` meanwhile)."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            busy = [pid for pid, cmd in self.processes().items() if cmd == "ray::LabelWorker.label"]
            if busy:
                return busy[0]
            time.sleep(0.05)
        raise AssertionError(f"no label worker was busy within {seconds} s: {self.processes()}")

    def workers_left(self, seconds: float = 30) -> list[int]:
        """The label workers still alive after up to `seconds` (killing an actor takes Ray a moment)."""
        deadline = time.monotonic() + seconds
        while (left := self.label_workers()) and time.monotonic() < deadline:
            time.sleep(0.5)
        return left


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    temp = Path(tempfile.mkdtemp(prefix="sarmray", dir="/tmp"))  # short: Ray's socket paths live under it
    gcs, client, agent, dashboard = free_ports(4)
    log = (temp / "ray-start.log").open("wb")
    process = subprocess.Popen(
        [
            str(BIN / "ray"),
            "start",
            "--head",
            "--block",
            "--port",
            str(gcs),
            "--node-ip-address",
            "127.0.0.1",
            "--num-cpus",
            str(WORKERS),
            "--include-dashboard=false",
            "--dashboard-port",
            str(dashboard),
            "--ray-client-server-port",
            str(client),
            "--dashboard-agent-listen-port",
            str(agent),
            "--temp-dir",
            str(temp / "t"),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        env=os.environ.copy(),
    )
    running = Cluster(f"127.0.0.1:{gcs}", process)
    try:
        deadline = time.monotonic() + START_SECONDS
        while b"Ray runtime started" not in (temp / "ray-start.log").read_bytes():
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail("ray start did not come up:\n" + (temp / "ray-start.log").read_text()[-3000:])
            time.sleep(0.5)
        yield running
    finally:
        process.send_signal(signal.SIGTERM)  # `ray start --block` stops the processes it started
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        deadline = time.monotonic() + 30
        while running.processes() and time.monotonic() < deadline:
            time.sleep(0.5)
        stray = running.processes()
        for pid in stray:  # by pid, in our session only
            os.kill(pid, signal.SIGKILL)
        log.close()
        shutil.rmtree(temp, ignore_errors=True)
        assert not stray, f"Ray processes outlived the head: {stray}"


@pytest.fixture(scope="module")
def ds_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("rabc_ray") / "dataset"
    return write_dataset(root, [synthetic_episode(n, seed) for seed, n in enumerate(LENGTHS)]).root


@pytest.fixture(scope="module")
def single(ds_root: Path, sarm_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The single-process run's output directory (the reference)."""
    out = tmp_path_factory.mktemp("single") / "out"
    result = runner.invoke(
        app, ["rabc", str(ds_root), "--checkpoint", str(sarm_checkpoint), "--chunk-size", "3", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    return out


def provenance(out: Path) -> dict:
    return json.loads(pq.read_schema(out / PROGRESS_FILE).metadata[b"sarm.provenance"])


def assert_same_files(out: Path, reference: Path) -> None:
    """Identical rows and progress within 1e-6, as the contract says; the gains δ then agree within 2e-6 (a difference
    of two progress values), and the weights are exactly those of the progress written beside them. (Weights are not
    compared across the two runs: their soft ramp scales δ by 1/4σ and their steps at 0 and κ turn on a hair.)"""
    for name in (PROGRESS_FILE, WEIGHTS_FILE):
        got, want = pq.read_table(out / name), pq.read_table(reference / name)
        assert got.schema.equals(want.schema, check_metadata=False), name
        assert got.num_rows == want.num_rows == sum(LENGTHS)
        for column in ("index", "episode_index", "frame_index"):
            assert got.column(column).to_pylist() == want.column(column).to_pylist(), (name, column)
    progress = {d: pq.read_table(d / PROGRESS_FILE).column("progress_sparse").to_numpy() for d in (out, reference)}
    np.testing.assert_allclose(progress[out], progress[reference], rtol=0, atol=1e-6)
    weights = {d: pq.read_table(d / WEIGHTS_FILE) for d in (out, reference)}
    np.testing.assert_allclose(
        weights[out].column("delta").to_numpy(), weights[reference].column("delta").to_numpy(), rtol=0, atol=2e-6
    )
    got_summary, want_summary = (json.loads((d / SUMMARY_FILE).read_text()) for d in (out, reference))
    assert got_summary["params"] == want_summary["params"]
    params = got_summary["params"]
    episodes = [e.progress for e in read_progress(out / PROGRESS_FILE).episodes]
    expected = rabc_weights(episodes, params["chunk_size"], params["kappa"], params["eps"], params["stats"])
    np.testing.assert_array_equal(weights[out].column("weight").to_numpy(), np.concatenate(expected).astype(np.float32))
    assert got_summary["summary"].keys() == want_summary["summary"].keys()
    assert (
        got_summary["summary"]["episode_mean_weights"].keys() == want_summary["summary"]["episode_mean_weights"].keys()
    )
    assert got_summary["summary"]["mean_weight"] == pytest.approx(float(np.concatenate(expected).mean()), abs=1e-6)
    got_provenance = provenance(out)
    assert got_provenance.pop("ray") == {"workers": WORKERS}
    assert got_provenance == provenance(reference)
    assert got_summary["progress"] == {**got_provenance, "ray": {"workers": WORKERS}}


def test_cli_on_ray_writes_the_files_of_the_single_process_run(
    cluster: Cluster, single: Path, ds_root: Path, sarm_checkpoint: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    # The command as a user runs it: its own process, a driver that joins the cluster at ADDRESS.
    result = subprocess.run(
        [
            str(BIN / "sarm"),
            "rabc",
            str(ds_root),
            "--checkpoint",
            str(sarm_checkpoint),
            "--chunk-size",
            "3",
            "--out",
            str(out),
            "--ray",
            cluster.address,
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"labelled on {WORKERS} Ray worker(s) at {cluster.address}" in result.stdout
    assert f"{len(LENGTHS)}/{len(LENGTHS)}" in result.stdout  # the driver's progress bar, episodes done / total
    assert_same_files(out, single)
    assert not cluster.workers_left()  # the workers end with the run; the cluster stays


def test_a_worker_killed_mid_run_is_restarted_and_the_output_is_complete(
    cluster: Cluster, single: Path, ds_root: Path, sarm_checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RAY_ADDRESS", cluster.address)  # `auto`, as Ray defines it
    killed: list[int] = []
    before: list[int] = []  # the worker processes when the kill lands
    calls: list[tuple[int, int]] = []

    def kill_one_after_the_first_episode(done: int, total: int) -> None:
        calls.append((done, total))
        if done == 1:
            before.extend(cluster.label_workers())
            assert len(before) == WORKERS, before
            victim = cluster.busy_worker()  # one scoring an episode now: it has calls in flight
            os.kill(victim, signal.SIGKILL)  # a real process death, not an exception
            killed.append(victim)

    run = label_on_ray(
        EpisodeLabeller(ds_root, sarm_checkpoint, 1),
        RayOptions("auto", WORKERS),
        on_episode=kill_one_after_the_first_episode,
    )
    assert killed and killed[0] not in cluster.label_workers()
    assert calls == [(done, len(LENGTHS)) for done in range(len(LENGTHS) + 1)]
    assert sorted(run.scored_by) == list(range(len(LENGTHS)))
    # The restarted worker, a process that did not exist at the kill, scored what the killed one had been sent
    # (Ray re-sends an actor's unanswered calls to its restart).
    restarted = set(run.scored_by.values()) - set(before)
    assert len(restarted) == 1 and killed[0] not in restarted
    reference = read_progress(single / PROGRESS_FILE)
    assert [e.episode_index for e in run.progress.episodes] == [e.episode_index for e in reference.episodes]
    for got, want in zip(run.progress.episodes, reference.episodes, strict=True):
        np.testing.assert_array_equal(got.index, want.index)
        np.testing.assert_allclose(got.progress, want.progress, atol=1e-6)
    assert run.progress.provenance["ray"] == {"workers": WORKERS}
    assert not cluster.workers_left()


def test_a_driver_without_the_clusters_token_is_told_so(
    cluster: Cluster, ds_root: Path, sarm_checkpoint: Path, tmp_path: Path
) -> None:
    # No token anywhere: not in the environment, not in ~/.ray (HOME is empty).
    env = {k: v for k, v in os.environ.items() if k != "RAY_AUTH_TOKEN"} | {
        "RAY_AUTH_MODE": "disabled",
        "HOME": str(tmp_path),
    }
    result = subprocess.run(
        [
            str(BIN / "sarm"),
            "rabc",
            str(ds_root),
            "--checkpoint",
            str(sarm_checkpoint),
            "--chunk-size",
            "3",
            "--out",
            str(tmp_path / "out"),
            "--ray",
            cluster.address,
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"the Ray cluster at '{cluster.address}' refused this driver's token" in result.stdout
    assert "Traceback" not in result.stdout + result.stderr
    assert not (tmp_path / "out").exists()


def test_an_unreachable_head_fails_in_one_line(ds_root: Path, sarm_checkpoint: Path, tmp_path: Path) -> None:
    [nobody] = free_ports(1)
    started = time.monotonic()
    result = runner.invoke(
        app,
        [
            "rabc",
            str(ds_root),
            "--checkpoint",
            str(sarm_checkpoint),
            "--chunk-size",
            "3",
            "--out",
            str(tmp_path / "out"),
            "--ray",
            f"127.0.0.1:{nobody}",
        ],
    )
    assert result.exit_code == 1, result.output
    assert f"cannot reach a Ray cluster at '127.0.0.1:{nobody}'" in result.output
    assert "Traceback" not in result.output
    assert time.monotonic() - started < 60  # not Ray's minutes of retries
    assert not (tmp_path / "out").exists()


def test_bad_input_is_refused_before_the_cluster_is_asked(sarm_checkpoint: Path, tmp_path: Path) -> None:
    [nobody] = free_ports(1)  # the dataset is checked first: no cluster is needed to hear about it
    result = runner.invoke(
        app,
        [
            "rabc",
            str(tmp_path / "missing"),
            "--checkpoint",
            str(sarm_checkpoint),
            "--chunk-size",
            "3",
            "--out",
            str(tmp_path / "out"),
            "--ray",
            f"127.0.0.1:{nobody}",
        ],
    )
    assert result.exit_code == 2, result.output
    assert "does not exist" in result.output and "Traceback" not in result.output


def test_the_labeller_travels_without_its_scorer() -> None:
    labeller = EpisodeLabeller(Path("/data/ds"), Path("/ckpt"), 2, threads=1)
    labeller.__dict__["_scorer"] = object()  # what the first label() caches in a worker
    back = pickle.loads(pickle.dumps(labeller))
    assert back == labeller and "_scorer" not in back.__dict__
    with pytest.raises(ValueError, match="stride must be >= 1"):
        EpisodeLabeller(Path("/data/ds"), Path("/ckpt"), 0)


def test_assemble_orders_episodes_and_refuses_missing_or_repeated_ones() -> None:
    labeller = EpisodeLabeller(Path("/data/ds"), Path("/ckpt"))

    def episode(i: int) -> EpisodeProgress:
        return EpisodeProgress(i, np.arange(2, dtype=np.int64) + 2 * i, np.full(2, i, np.float32))

    progress = labeller.assemble([episode(2), episode(0), episode(1)], {"a": 1}, [0, 1, 2])
    assert [e.episode_index for e in progress.episodes] == [0, 1, 2] and progress.provenance == {"a": 1}
    with pytest.raises(ValueError, match=r"missing episodes \[1\], unexpected \[\]"):
        labeller.assemble([episode(0), episode(2)], {}, [0, 1, 2])
    with pytest.raises(ValueError, match=r"unexpected \[7\]"):
        labeller.assemble([episode(0), episode(7)], {}, [0])
    with pytest.raises(ValueError, match="episode 0 was labelled twice"):
        labeller.assemble([episode(0), episode(0)], {}, [0])
