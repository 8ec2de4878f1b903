"""Run the real ``tritonserver`` binary from the ``nvidia-pytriton`` wheel on a model repository.

pytriton itself wraps the binary around Python callables; we only borrow the binary, its python backend and the
bundled libraries (``site-packages/nvidia_pytriton.libs``) and launch it directly, as NVIDIA's container would.
See docs/triton.md for the environment it needs and why.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import FrameType, TracebackType

LOOPBACK = "127.0.0.1"
STUB_NAME = "triton_python_backend_stub"
SHM_DIR = Path("/dev/shm")
_LOG_TAIL_LINES = 40
_KILL_GRACE_S = 10.0  # beyond the exit timeout: unloading models and stopping stubs takes a second or two


class TritonError(RuntimeError):
    """tritonserver is missing, cannot start, or died."""


@dataclass(frozen=True)
class TritonInstallation:
    """Paths inside the installed nvidia-pytriton wheel."""

    binary: Path
    python_backend: Path  # libtriton_python.so + triton_python_backend_utils.py
    stub: Path  # the python stub built for this interpreter's minor version
    caches: Path
    libs: Path  # nvidia_pytriton.libs: libtritonserver, libcudart, … (auditwheel-vendored)


@dataclass(frozen=True)
class TritonEndpoints:
    """``host:port`` strings, as tritonclient takes them."""

    grpc: str
    http: str
    metrics: str


def find_tritonserver() -> TritonInstallation:
    """Locate the binary in the nvidia-pytriton wheel without importing pytriton (its import is slow and noisy)."""
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        raise TritonError("nvidia-pytriton is not installed in this environment: pip install nvidia-pytriton")
    package = Path(next(iter(spec.submodule_search_locations)))
    dist = package / "tritonserver"
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    installation = TritonInstallation(
        binary=dist / "bin" / "tritonserver",
        python_backend=dist / "backends" / "python",
        stub=dist / "python_backend_stubs" / version / STUB_NAME,
        caches=dist / "caches",
        libs=package.parent / "nvidia_pytriton.libs",
    )
    for path in (installation.binary, installation.python_backend, installation.stub, installation.libs):
        if not path.exists():
            raise TritonError(f"nvidia-pytriton is incomplete or has no stub for Python {version}: {path} is missing")
    return installation


def prepare_backend_directory(dest: Path, installation: TritonInstallation | None = None) -> Path:
    """Build ``dest/python`` = the wheel's python backend plus the stub for this Python, all as symlinks.

    The wheel keeps one stub per Python version aside; the backend only looks for ``python/<stub>`` in the backend
    directory. Symlinks keep the stub's ``$ORIGIN`` rpath pointing into the wheel, and leave site-packages untouched.
    """
    installation = installation or find_tritonserver()
    python_dir = dest / "python"
    python_dir.mkdir(parents=True, exist_ok=True)
    links = {entry.name: entry for entry in installation.python_backend.iterdir() if entry.suffix in {".so", ".py"}}
    links[STUB_NAME] = installation.stub
    for name, target in links.items():
        link = python_dir / name
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(target.resolve())
    return dest


def libpython_dir() -> Path:
    """Directory of this interpreter's ``libpython3.X.so.1.0``, which the stub embeds.

    Without it on LD_LIBRARY_PATH the stub picks whatever libpython the system has (Debian's ``libpython3.11``) or
    none, and then cannot import the venv's packages compiled for this interpreter.
    """
    libdir = Path(str(sysconfig.get_config_var("LIBDIR")))
    soname = str(sysconfig.get_config_var("INSTSONAME"))
    if not (libdir / soname).exists():
        raise TritonError(
            f"the python backend stub needs {soname}, not found in {libdir}: build the interpreter with "
            "--enable-shared (pyenv: PYTHON_CONFIGURE_OPTS=--enable-shared) or, for Debian's python3, "
            "apt-get install libpython3.11"
        )
    return libdir


def tritonserver_env(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """Environment for tritonserver and its python stubs: ``base`` (default ``os.environ``) plus two fixes.

    - LD_LIBRARY_PATH: this interpreter's LIBDIR (see ``libpython_dir``) and the wheel's vendored libraries.
    - PATH: this environment's ``bin`` first. The embedded interpreter ignores PYTHONPATH and finds its prefix (and so
      the venv's site-packages: numpy, onnxruntime) by searching PATH for ``python3``.
    """
    env = dict(os.environ if base is None else base)
    libs = [str(libpython_dir()), str(find_tritonserver().libs)]
    env["LD_LIBRARY_PATH"] = os.pathsep.join([*libs, *filter(None, env.get("LD_LIBRARY_PATH", "").split(os.pathsep))])
    env["PATH"] = os.pathsep.join([str(Path(sys.prefix) / "bin"), env.get("PATH", os.defpath)])
    return env


def tritonserver_command(
    model_repository: Path,
    *,
    backend_directory: Path,
    grpc_port: int,
    http_port: int,
    metrics_port: int,
    shm_region_prefix: str | None = None,
    exit_timeout_s: int = 5,
    log_verbose: int = 0,
) -> list[str]:
    """The tritonserver command line, all endpoints on loopback.

    ``backend_directory`` comes from ``prepare_backend_directory``. The python backend names its /dev/shm regions by
    a prefix that is global to the machine, so two servers sharing the default one break each other: the default here
    is unique among running servers (by gRPC port). On SIGTERM tritonserver waits up to ``exit_timeout_s`` for
    in-flight requests *and for clients' open HTTP keep-alive connections* (its default, 30 s, makes every stop slow).
    """
    installation = find_tritonserver()
    shm_region_prefix = shm_region_prefix or f"sarm_triton_{grpc_port}_"
    return [
        str(installation.binary),
        f"--model-repository={Path(model_repository).resolve()}",
        f"--backend-directory={backend_directory}",
        f"--cache-directory={installation.caches}",
        f"--backend-config=python,shm-region-prefix-name={shm_region_prefix}",
        f"--grpc-address={LOOPBACK}",
        f"--grpc-port={grpc_port}",
        f"--http-address={LOOPBACK}",
        f"--http-port={http_port}",
        f"--metrics-address={LOOPBACK}",
        f"--metrics-port={metrics_port}",
        "--allow-gpu-metrics=false",
        "--pinned-memory-pool-byte-size=0",  # CPU only: skips a CUDA allocation that warns on every start
        "--disable-auto-complete-config",
        "--exit-on-error=true",
        "--strict-readiness=true",
        f"--exit-timeout-secs={exit_timeout_s}",
        f"--log-verbose={log_verbose}",
    ]


def free_port() -> int:
    """A TCP port free on loopback right now (another process may still take it before tritonserver binds it)."""
    return free_ports(1)[0]


def free_ports(count: int) -> list[int]:
    """``count`` distinct free loopback ports: every socket stays open until all are picked."""
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind((LOOPBACK, 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _require_free(port: int) -> None:
    # Checked up front: the readiness poll would otherwise take another server on that port for ours.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT leftovers are no conflict
        try:
            sock.bind((LOOPBACK, port))
        except OSError as exc:
            raise TritonError(f"port {port} on {LOOPBACK} is already in use ({exc.strerror})") from exc


def _is_ready(http: str) -> bool:
    # No proxies: an http_proxy set for package registries must not swallow loopback health checks.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(f"http://{http}/v2/health/ready", timeout=1.0) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


class TritonServer:
    """A tritonserver subprocess on a model repository, as a context manager.

    >>> with TritonServer(Path("model_repo")) as server:
    ...     client = tritonclient.grpc.InferenceServerClient(server.endpoints.grpc)
    """

    def __init__(
        self,
        model_repository: Path,
        *,
        grpc_port: int | None = None,
        http_port: int | None = None,
        metrics_port: int | None = None,
        log_file: Path | None = None,
        startup_timeout_s: float = 60.0,
        exit_timeout_s: int = 5,
        log_verbose: int = 0,
    ) -> None:
        self.model_repository = Path(model_repository)
        self._ports = (grpc_port, http_port, metrics_port)
        self._log_file = log_file
        self.startup_timeout_s = startup_timeout_s
        self.exit_timeout_s = exit_timeout_s
        self.log_verbose = log_verbose
        self._process: subprocess.Popen[bytes] | None = None
        self._workdir: Path | None = None
        self._endpoints: TritonEndpoints | None = None
        self._shm_prefix = ""
        self.log_path: Path | None = None

    @property
    def endpoints(self) -> TritonEndpoints:
        if self._endpoints is None:
            raise TritonError("tritonserver is not running: call start() first")
        return self._endpoints

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    def is_running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def wait(self, timeout_s: float | None = None) -> int:
        """Block until tritonserver exits; its exit code."""
        if self._process is None:
            raise TritonError("tritonserver is not running: call start() first")
        return self._process.wait(timeout_s)

    def start(self) -> TritonServer:
        """Launch tritonserver and wait until it and all its models are ready; a no-op when already running."""
        if self.is_running():
            return self
        self.stop()  # clean up after a server that died
        if not self.model_repository.is_dir():
            raise TritonError(f"model repository {self.model_repository} is not a directory")
        for port in filter(None, self._ports):
            _require_free(port)
        env = tritonserver_env()
        picked = iter(free_ports(3))
        grpc_port, http_port, metrics_port = (port if port is not None else next(picked) for port in self._ports)
        self._workdir = Path(tempfile.mkdtemp(prefix="sarm-triton-"))
        try:
            self._launch(env, grpc_port, http_port, metrics_port)
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _launch(self, env: dict[str, str], grpc_port: int, http_port: int, metrics_port: int) -> None:
        assert self._workdir is not None
        self.log_path = self._log_file or self._workdir / "tritonserver.log"
        self._shm_prefix = f"sarm_triton_{grpc_port}_{secrets.token_hex(4)}_"
        command = tritonserver_command(
            self.model_repository,
            backend_directory=prepare_backend_directory(self._workdir / "backends"),
            grpc_port=grpc_port,
            http_port=http_port,
            metrics_port=metrics_port,
            shm_region_prefix=self._shm_prefix,
            exit_timeout_s=self.exit_timeout_s,
            log_verbose=self.log_verbose,
        )
        with open(self.log_path, "ab") as log:
            # A session of its own: Ctrl-C in a terminal reaches us, not the server, and stop() can kill the group.
            self._process = subprocess.Popen(
                command,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self._endpoints = TritonEndpoints(
            grpc=f"{LOOPBACK}:{grpc_port}", http=f"{LOOPBACK}:{http_port}", metrics=f"{LOOPBACK}:{metrics_port}"
        )

    def _wait_ready(self) -> None:
        assert self._process is not None and self._endpoints is not None
        deadline = time.monotonic() + self.startup_timeout_s
        while not _is_ready(self._endpoints.http):
            if self._process.poll() is not None:
                raise TritonError(
                    f"tritonserver exited with code {self._process.returncode} during startup:\n{self.log_tail()}"
                )
            if time.monotonic() > deadline:
                raise TritonError(f"tritonserver not ready after {self.startup_timeout_s:.0f} s:\n{self.log_tail()}")
            time.sleep(0.1)

    def stop(self) -> None:
        """SIGTERM (graceful: in-flight requests finish), then SIGKILL to the whole group if it overruns."""
        process, self._process, self._endpoints = self._process, None, None
        if process is not None:
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(self.exit_timeout_s + _KILL_GRACE_S)
                except subprocess.TimeoutExpired:
                    _kill_group(process.pid)
                    process.wait()
            _kill_group(process.pid)  # python stubs that outlived their server
            # A killed server leaves its regions behind; nobody else uses this prefix.
            for region in SHM_DIR.glob(f"{self._shm_prefix}*"):
                region.unlink(missing_ok=True)
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None

    def log_tail(self, lines: int = _LOG_TAIL_LINES) -> str:
        if self.log_path is None or not self.log_path.exists():
            return "(no log)"
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def __enter__(self) -> TritonServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()


def _kill_group(pgid: int, timeout_s: float = 5.0) -> None:
    """SIGKILL the process group and wait for it to die: delivery is asynchronous, callers expect it gone."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout_s
    while _group_alive(pgid) and time.monotonic() < deadline:
        time.sleep(0.01)


def _group_alive(pgid: int) -> bool:
    """Any process of the group still running? Zombies waiting for a (container) init to reap them do not count."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            state, _ppid, group = stat.read_text().rsplit(")", 1)[1].split()[:3]
        except (OSError, ValueError):
            continue  # exited while we looked
        if int(group) == pgid and state not in "ZX":
            return True
    return False


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m sarm.triton.server", description=__doc__.splitlines()[0])
    parser.add_argument("--model-repository", type=Path, required=True)
    parser.add_argument("--grpc-port", type=int, default=8001)
    parser.add_argument("--http-port", type=int, default=8000)
    parser.add_argument("--metrics-port", type=int, default=8002)
    parser.add_argument("--log-file", type=Path, default=None, help="default: a temporary file, removed on exit")
    parser.add_argument("--startup-timeout", type=float, default=120.0, help="seconds")
    parser.add_argument("--exit-timeout", type=int, default=5, help="seconds to drain requests on shutdown")
    parser.add_argument("--log-verbose", type=int, default=0)
    return parser.parse_args(argv)


class _Interrupted(Exception):
    pass


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise _Interrupted(signal.Signals(signum).name)


def main(argv: list[str] | None = None) -> int:
    """Serve a model repository in the foreground until SIGINT/SIGTERM."""
    args = _parse_args(argv)
    server = TritonServer(
        args.model_repository,
        grpc_port=args.grpc_port,
        http_port=args.http_port,
        metrics_port=args.metrics_port,
        log_file=args.log_file,
        startup_timeout_s=args.startup_timeout,
        exit_timeout_s=args.exit_timeout,
        log_verbose=args.log_verbose,
    )
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        server.start()
        endpoints = server.endpoints
        print(
            f"tritonserver ready (pid {server.pid}): grpc {endpoints.grpc}  http {endpoints.http}  "
            f"metrics http://{endpoints.metrics}/metrics  log {server.log_path}",
            flush=True,
        )
        code = server.wait()
        print(f"tritonserver exited with code {code}:\n{server.log_tail()}", file=sys.stderr)
        return 1
    except _Interrupted:
        return 0
    except TritonError as exc:
        print(exc, file=sys.stderr)
        return 1
    finally:
        # A second Ctrl-C must not cut the shutdown short and orphan the server.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        server.stop()


if __name__ == "__main__":
    sys.exit(main())
