"""sarm_grpc_requests_total{method,code} and sarm_grpc_request_duration_seconds{method} for every call the gRPC
server answers (health and reflection included), observed by a server interceptor so the servicers stay clean."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from sarm_gateway.metrics import Metrics

Behavior = Callable[[Any, grpc.aio.ServicerContext], Any]


def _code(context: grpc.aio.ServicerContext, error: BaseException | None) -> str:
    if error is None or isinstance(error, grpc.aio.AbortError):  # an abort leaves its code on the context
        code = context.code()
        return code.name if isinstance(code, grpc.StatusCode) else "OK"
    if isinstance(error, asyncio.CancelledError | GeneratorExit):  # the client went away, or its deadline passed
        return "CANCELLED"
    return "UNKNOWN"  # an unhandled exception: grpc answers UNKNOWN


class MetricsInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def _record(
        self, method: str, context: grpc.aio.ServicerContext, started: float, error: BaseException | None
    ) -> None:
        self.metrics.grpc_requests.labels(method, _code(context, error)).inc()
        self.metrics.grpc_duration.labels(method).observe(time.perf_counter() - started)

    def _call(self, method: str, behavior: Behavior) -> Behavior:
        """A handler that returns (or writes its replies with context.write) and then finishes."""

        async def timed(request: Any, context: grpc.aio.ServicerContext) -> Any:
            started = time.perf_counter()
            try:
                result = await behavior(request, context)
            except BaseException as error:
                self._record(method, context, started, error)
                raise
            self._record(method, context, started, None)
            return result

        return timed

    def _generator(self, method: str, behavior: Callable[..., AsyncIterator[Any]]) -> Behavior:
        """A handler that yields its replies."""

        async def timed(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            started = time.perf_counter()
            try:
                async for reply in behavior(request, context):
                    yield reply
            except BaseException as error:
                self._record(method, context, started, error)
                raise
            self._record(method, context, started, None)

        return timed

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None:  # no such method: grpc answers UNIMPLEMENTED
            return handler
        method = handler_call_details.method.rpartition("/")[2]  # "/sarm.v1.RewardService/ScoreWindow" → ScoreWindow
        for kind in ("unary_unary", "unary_stream", "stream_unary", "stream_stream"):
            behavior = getattr(handler, kind)
            if behavior is not None:
                wrap = self._generator if inspect.isasyncgenfunction(behavior) else self._call
                return handler._replace(**{kind: wrap(method, behavior)})
        return handler
