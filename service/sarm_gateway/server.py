"""The gRPC front end (grpc.aio): RewardService, grpc.health.v1 and server reflection; and the Gateway, which runs
it beside the HTTP front end on one event loop and one Engine.

Every call takes a slot of in-flight work (RESOURCE_EXHAUSTED with a `retry-after-ms` trailer when none is
free), runs under the caller's remaining deadline, and maps engine errors to status codes.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, nullcontext
from typing import Any, TypeVar

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from sarm.scoring.curve import score_curve
from sarm.scoring.deadlines import budget
from sarm_gateway.admission import Admission
from sarm_gateway.auth import Authenticator, Operation
from sarm_gateway.convert import (
    frame_score_to_proto,
    frames_from_proto,
    model_info,
    options_from_proto,
    request_bytes,
    score_to_proto,
)
from sarm_gateway.deps import Deps, build_deps
from sarm_gateway.episode import Episode, window_stride
from sarm_gateway.errors import (
    BackendUnavailable,
    DeadlineExceeded,
    InvalidInput,
    NotLive,
    Overloaded,
    PermissionDenied,
    Unauthenticated,
)
from sarm_gateway.grpc_metrics import MetricsInterceptor
from sarm_gateway.http import HttpServer, create_app
from sarm_gateway.readiness import Readiness
from sarm_gateway.settings import Settings
from sarm_gateway.v1 import sarm_pb2 as pb
from sarm_gateway.v1 import sarm_pb2_grpc as pb_grpc

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["RewardService"].full_name
RETRY_AFTER = "retry-after-ms"
# The engine's and auth's errors as gRPC status codes (the HTTP front end maps the same errors in http/app.py).
STATUS: dict[type[Exception], grpc.StatusCode] = {
    InvalidInput: grpc.StatusCode.INVALID_ARGUMENT,
    Overloaded: grpc.StatusCode.RESOURCE_EXHAUSTED,
    DeadlineExceeded: grpc.StatusCode.DEADLINE_EXCEEDED,
    BackendUnavailable: grpc.StatusCode.UNAVAILABLE,
    NotLive: grpc.StatusCode.FAILED_PRECONDITION,
    Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
    PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
}
T = TypeVar("T")
Request = pb.ScoreWindowRequest | pb.ScoreFramesRequest | pb.StreamEpisodeRequest
# The drain (Gateway.stop): how often it checks the work in flight, how long no new call must have come before the
# gRPC server is stopped (calls it has taken but not yet handed to a handler are cancelled by the stop), and the
# grace the servers then get for calls that are only being refused.
DRAIN_POLL_S = 0.02
DRAIN_QUIET_S = 0.2
STOP_GRACE_S = 1.0


class RewardService(pb_grpc.RewardServiceServicer):
    def __init__(self, deps: Deps) -> None:
        self.engine = deps.engine
        self.settings = settings = deps.settings
        self.work = deps.work
        self.metrics = deps.metrics
        self.streams = Admission(settings.max_streams, settings.retry_after_ms, "streams")
        self.auth = Authenticator(settings.auth_tokens)
        self.last_call = time.monotonic()  # when a unit of work last arrived (the drain waits for a quiet spell)

    def _authorize(self, context: grpc.aio.ServicerContext, operation: Operation) -> None:
        if self.auth.enabled:
            headers = dict(context.invocation_metadata() or ())
            self.auth.authorize(headers.get("authorization"), operation)

    def _check_size(self, request: Request) -> None:
        size, limit = request_bytes(request), self.settings.max_message_bytes
        if size > limit:
            raise InvalidInput(
                f"message is {size} bytes; the limit is {limit} (SARM_MAX_MESSAGE_BYTES): send fewer "
                "frames per message, or JPEG-encode them"
            )

    @asynccontextmanager
    async def _errors(self, context: grpc.aio.ServicerContext) -> AsyncIterator[None]:
        """Engine errors → status codes; the rest propagates (INTERNAL, logged by grpc)."""
        try:
            yield
        except tuple(STATUS) as error:
            if isinstance(error, Overloaded):
                context.set_trailing_metadata(((RETRY_AFTER, str(error.retry_after_ms)),))
            await context.abort(next(code for kind, code in STATUS.items() if isinstance(error, kind)), str(error))

    @asynccontextmanager
    async def _unit(
        self, context: grpc.aio.ServicerContext, request: Request, operation: Operation | None = None
    ) -> AsyncIterator[None]:
        """One unit of work: the caller's authorization and an in-flight slot (unless `operation` is None: a step
        of an admitted stream), the size check, and the caller's remaining deadline. The slot counts the call's
        frames, which the admission's time bound weighs; during a drain it refuses with UNAVAILABLE."""
        self.last_call = time.monotonic()
        if operation is not None:
            self._authorize(context, operation)
        frames = len(request.frames) if isinstance(request, pb.ScoreWindowRequest | pb.ScoreFramesRequest) else 0
        with self.work.slot(frames) if operation is not None else nullcontext(), self.metrics.stage["total"].time():
            self._check_size(request)
            left = context.time_remaining()
            deadline = asyncio.timeout(left)
            try:
                async with deadline:
                    with budget(left):
                        yield
            except TimeoutError as error:
                if not deadline.expired():  # someone else's timeout: not the caller's deadline
                    raise
                raise DeadlineExceeded("deadline exceeded before the scores were ready") from error

    async def ScoreWindow(self, request: pb.ScoreWindowRequest, context: Any) -> pb.ScoreWindowResponse:
        engine = self.engine
        async with self._errors(context), self._unit(context, request, Operation.SCORE):
            steps = engine.time_steps(len(request.frames), "the window")
            live = engine.manifest.window.live
            if steps != engine.window_frames:
                layout = "[episode start, t−7g, …, t−g, t]" if live else "[t−(n/2)g, …, t, …, t+(n/2)g]"
                raise InvalidInput(
                    f"the window has {steps} time steps; the model takes exactly {engine.window_frames}: "
                    f"{layout} (repeat frames at the episode's ends)"
                )
            state = engine.state(request.state, steps, "the window")
            instruction = await engine.embed_instruction(request.instruction)
            encoded = (await engine.encode(frames_from_proto(request.frames))).steps(engine.num_cameras)
            # The window is already sampled: its frames at stride 1 are the window itself, scored at its last
            # frame (causal) or its centre (centred).
            t = steps - 1 if live else steps // 2
            [score] = await engine.score_at(encoded.with_state(state), [t], 1, instruction, steps)
        return pb.ScoreWindowResponse(score=score_to_proto(score, engine.version, instruction))

    async def ScoreFrames(self, request: pb.ScoreFramesRequest, context: Any) -> AsyncIterator[pb.FrameScore]:
        engine = self.engine
        async with self._errors(context), self._unit(context, request, Operation.SCORE):
            options = options_from_proto(request.options)
            stride = window_stride(request.fps, engine.manifest.window)
            steps = engine.time_steps(len(request.frames), "the episode")  # whole time steps, or InvalidInput
            state = engine.state(request.state, steps, "the episode")
            instruction = await engine.embed_instruction(request.instruction)
            encoded = (await engine.encode(frames_from_proto(request.frames))).steps(engine.num_cameras)
            results = await score_curve(
                engine, encoded.with_state(state), steps, request.fps, stride, instruction, options
            )
        for result in results:
            yield frame_score_to_proto(result, engine.version, instruction)

    async def StreamEpisode(
        self, request_iterator: AsyncIterator[pb.StreamEpisodeRequest], context: Any
    ) -> AsyncIterator[pb.StreamEpisodeResponse]:
        engine = self.engine
        episode: Episode | None = None
        episode_id = ""
        async with self._errors(context):
            self._authorize(context, Operation.STREAM)
            # The first message is read before the stream is admitted, and admission is announced by the initial
            # metadata, which clients await before sending steps: so no client write is in flight when a refusal
            # ends the call (grpc.aio would replace the refusal's status with its own INTERNAL).
            requests = aiter(request_iterator)
            first = await anext(requests, None)
            with self.streams.slot():
                await context.send_initial_metadata(())
                async for request in _prepend(first, requests):
                    kind = request.WhichOneof("message")
                    # An admitted stream is never cut by a burst of other calls: its steps, one at a time,
                    # are bounded by max_streams instead of max_in_flight.
                    async with self._unit(context, request):
                        if kind == "open":
                            if episode is not None:
                                raise InvalidInput(
                                    "this stream already has an open episode: start a new stream for each episode"
                                )
                            if not engine.manifest.window.live:
                                raise NotLive(
                                    "this model's window is centred (frame t's score needs frames after t), so it "
                                    "cannot score a live stream: send whole episodes to ScoreFrames or upload them"
                                )
                            opened = request.open
                            options = options_from_proto(opened.options)
                            instruction = await engine.embed_instruction(opened.instruction)
                            episode, episode_id = Episode(engine, instruction, opened.fps, options), opened.episode_id
                            continue
                        if kind != "step":
                            raise InvalidInput("empty message: set `open` (first message) or `step`")
                        if episode is None:
                            raise InvalidInput(
                                "no episode is open: the first message of a stream must be `open` "
                                "(instruction, fps, options)"
                            )
                        step = request.step
                        results = await episode.step(frames_from_proto(step.frames), list(step.state))
                    yield pb.StreamEpisodeResponse(
                        episode_id=episode_id,
                        scores=[frame_score_to_proto(r, engine.version, episode.instruction) for r in results],
                    )

    async def GetModelInfo(self, request: pb.GetModelInfoRequest, context: Any) -> pb.ModelInfo:
        async with self._errors(context):
            self._authorize(context, Operation.INFO)
        return model_info(self.engine)


async def _prepend(first: T | None, rest: AsyncIterator[T]) -> AsyncIterator[T]:
    if first is not None:
        yield first
    async for item in rest:
        yield item


def server_credentials(settings: Settings) -> grpc.ServerCredentials | None:
    """TLS credentials from the settings' PEM files (mutual TLS with a client CA); None: plaintext."""
    if settings.tls_cert_file is None or settings.tls_key_file is None:
        return None
    pair = (settings.tls_key_file.read_bytes(), settings.tls_cert_file.read_bytes())
    client_ca = settings.tls_client_ca_file.read_bytes() if settings.tls_client_ca_file is not None else None
    return grpc.ssl_server_credentials([pair], root_certificates=client_ca, require_client_auth=client_ca is not None)


class Gateway:
    """Both front ends and their lifecycle: start, then on SIGTERM report NOT_SERVING (gRPC health) and not ready
    (/readyz), drain in-flight calls of both for up to drain_seconds, stop.

    HTTP serves the API, /metrics, /livez and /readyz on http_port; without an http_port, the operational endpoints
    alone are served on metrics_port, so a gRPC-only gateway can still be scraped and probed."""

    def __init__(self, deps: Deps) -> None:
        self.deps = deps
        self.engine = deps.engine
        self.settings = settings = deps.settings
        self.service = RewardService(deps)
        self.health = health.aio.HealthServicer()
        self.readiness = Readiness()
        deps.metrics.ready.set_function(lambda: self.readiness.ready)
        deps.metrics.active_streams.set_function(lambda: self.service.streams.in_flight)
        # grpc's own limit sits above ours so that a too-large message gets our INVALID_ARGUMENT and advice.
        transport_limit = 2 * settings.max_message_bytes
        self.server = grpc.aio.server(
            interceptors=[MetricsInterceptor(deps.metrics)],
            options=[
                ("grpc.max_receive_message_length", transport_limit),
                ("grpc.max_send_message_length", transport_limit),
                ("grpc.so_reuseport", 0),
            ],
        )
        pb_grpc.add_RewardServiceServicer_to_server(self.service, self.server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection(
            (SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME),
            self.server,
        )
        self.jobs = deps.jobs
        api = settings.http_port is not None
        self.http = HttpServer(
            create_app(deps, self.readiness, api_routes=api),
            settings.http_host,
            settings.metrics_port if settings.http_port is None else settings.http_port,
            settings.drain_seconds,
            settings.retry_after_ms,
        )
        self.port = 0
        self.http_port = 0
        self._stopping: asyncio.Task[None] | None = None
        self._watching: asyncio.Task[None] | None = None

    async def start(self) -> int:
        address = f"{self.settings.grpc_host}:{self.settings.grpc_port}"
        credentials = server_credentials(self.settings)
        if credentials is None:
            self.port = self.server.add_insecure_port(address)
        else:
            self.port = self.server.add_secure_port(address, credentials)
        if self.port == 0:
            raise OSError(f"cannot listen on {self.settings.grpc_host}:{self.settings.grpc_port}")
        await self.server.start()
        try:
            self.http_port = await self.http.start()
        except OSError:
            await self.server.stop(0)
            raise
        await self._report_backend()
        self._watching = asyncio.get_running_loop().create_task(self._watch_backend())
        return self.port

    async def _report_backend(self) -> None:
        """SERVING exactly while the backend can run the models (after a drain began, health ignores this)."""
        self.readiness.backend_ready = ready = await self.engine.backend.ready()
        status = health_pb2.HealthCheckResponse.SERVING if ready else health_pb2.HealthCheckResponse.NOT_SERVING
        for name in ("", SERVICE_NAME):
            await self.health.set(name, status)

    async def _watch_backend(self) -> None:
        while True:
            await asyncio.sleep(self.settings.health_interval_s)
            await self._report_backend()

    async def stop(self) -> None:
        """The drain. NOT_SERVING / not ready first (load balancers stop sending), and new work refused with
        UNAVAILABLE / 503 + Retry-After (clients retry on another replica) while both front ends keep taking calls;
        then up to drain_seconds for the work in flight; only then are the servers stopped (calls still running get
        UNAVAILABLE) and the engine closed.

        The gRPC server is stopped last on purpose: grpc.aio's server.stop() at once cancels the calls it has taken
        but not yet handed to a handler, and their clients see CANCELLED, which they do not retry. With a burst in
        flight at SIGTERM the busy event loop leaves many calls there (issue #13: 24 of 64 CANCELLED at 0.01 s)."""
        deadline = time.monotonic() + self.settings.drain_seconds
        self.readiness.draining = True
        self.deps.work.draining = self.service.streams.draining = True
        self.http.drain()
        await self.health.enter_graceful_shutdown()
        if self._watching is not None:
            self._watching.cancel()
        await self._drain(deadline)
        grace = max(0.0, min(STOP_GRACE_S, deadline - time.monotonic()))
        await asyncio.gather(self.server.stop(grace), self.http.stop(grace))
        await self.jobs.close()
        await self.engine.close()

    async def _drain(self, deadline: float) -> None:
        """Until the admitted work (unary calls of both front ends, open streams) is done and no call has come for
        DRAIN_QUIET_S (so none is left waiting for a handler), or until `deadline`."""
        while (now := time.monotonic()) < deadline:
            idle = self.deps.work.in_flight == 0 and self.service.streams.in_flight == 0
            if idle and now - self.service.last_call >= DRAIN_QUIET_S:
                return
            await asyncio.sleep(DRAIN_POLL_S)

    def stop_soon(self) -> None:
        if self._stopping is None:
            self._stopping = asyncio.get_running_loop().create_task(self.stop())

    async def wait(self) -> None:
        await self.server.wait_for_termination()
        if self._stopping is not None:
            await self._stopping


async def serve(settings: Settings, on_started: Callable[[Gateway], None] | None = None) -> None:
    """Run until SIGTERM or SIGINT. `on_started(gateway)` is called once both front ends listen."""
    gateway = Gateway(build_deps(settings))
    try:
        await gateway.start()
    except BaseException:
        await gateway.engine.close()
        raise
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, gateway.stop_soon)
    if on_started is not None:
        on_started(gateway)
    await gateway.wait()
