"""An asyncio micro-batcher: concurrent calls within `max_delay` (up to `max_batch` rows) run as one batch.

Each call passes arrays that share their first (batch) dimension and gets back its own rows of the outputs.
Batches run one at a time per `concurrency` slot; while one runs, new calls queue up and form the next batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import numpy as np

from sarm.scoring.errors import BackendUnavailable
from sarm.scoring.metrics import BatcherMetrics

Arrays = tuple[np.ndarray, ...]


@dataclass
class _Call:
    inputs: Arrays
    future: asyncio.Future[Arrays] = field(default_factory=lambda: asyncio.get_running_loop().create_future())
    queued_at: float = field(default_factory=time.perf_counter)

    @property
    def rows(self) -> int:
        return len(self.inputs[0])


class MicroBatcher:
    def __init__(
        self,
        run: Callable[..., Awaitable[Arrays]],
        max_batch: int,
        max_delay_s: float,
        concurrency: int = 1,
        metrics: BatcherMetrics | None = None,
    ) -> None:
        if max_batch < 1 or max_delay_s < 0 or concurrency < 1:
            raise ValueError(
                f"need max_batch >= 1, max_delay_s >= 0, concurrency >= 1; got {max_batch}, "
                f"{max_delay_s}, {concurrency}"
            )
        self._run = run
        self.max_batch = max_batch
        self.max_delay_s = max_delay_s
        self._slots = asyncio.Semaphore(concurrency)
        self._pending: list[_Call] = []
        self._arrived = asyncio.Event()
        self._full = asyncio.Event()
        self._worker: asyncio.Task[None] | None = None
        self._running: set[asyncio.Task[None]] = set()
        self._metrics = metrics
        if metrics is not None:
            metrics.queue_depth.set_function(lambda: self.queued_rows)

    @property
    def queued_rows(self) -> int:
        return sum(c.rows for c in self._pending)

    async def __call__(self, *inputs: np.ndarray) -> Arrays:
        rows = len(inputs[0])
        if rows > self.max_batch:  # split, so no batch exceeds what the backend accepts
            parts = await asyncio.gather(
                *(self(*(x[i : i + self.max_batch] for x in inputs)) for i in range(0, rows, self.max_batch))
            )
            return tuple(np.concatenate(outs) for outs in zip(*parts, strict=True))
        if self._worker is None:
            self._worker = asyncio.create_task(self._loop())
        call = _Call(inputs)
        self._pending.append(call)
        self._arrived.set()
        if self.queued_rows >= self.max_batch:
            self._full.set()
        return await call.future

    async def _loop(self) -> None:
        while True:
            await self._arrived.wait()
            await self._slots.acquire()
            if not self._full.is_set() and self.max_delay_s > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._full.wait(), self.max_delay_s)
            batch, rows = [], 0
            while self._pending and rows + self._pending[0].rows <= self.max_batch:
                call = self._pending.pop(0)
                if not call.future.done():  # skip callers that gave up (cancelled, deadline)
                    batch.append(call)
                    rows += call.rows
            if self.queued_rows < self.max_batch:
                self._full.clear()
            if not self._pending:
                self._arrived.clear()
            if not batch:
                self._slots.release()
                continue
            task = asyncio.create_task(self._execute(batch))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _execute(self, batch: list[_Call]) -> None:
        try:
            inputs = tuple(np.concatenate(parts) for parts in zip(*(c.inputs for c in batch), strict=True))
            if self._metrics is not None:
                started = time.perf_counter()
                for call in batch:
                    self._metrics.queue_wait.observe(started - call.queued_at)
                self._metrics.batch_rows.observe(len(inputs[0]))
            outputs = await self._run(*inputs)
        except Exception as error:  # every caller of the batch sees the backend's error
            _fail(batch, error)
            return
        except asyncio.CancelledError:  # close(): the callers learn why rather than wait forever
            _fail(batch, BackendUnavailable("the scoring engine shut down before this batch finished; retry"))
            raise
        finally:
            self._slots.release()
        start = 0
        for call in batch:
            if not call.future.done():
                call.future.set_result(tuple(out[start : start + call.rows] for out in outputs))
            start += call.rows

    async def close(self) -> None:
        """Stop the batches: callers still queued, or in a batch that was running, get BackendUnavailable (UNAVAILABLE,
        which clients retry elsewhere), never a bare cancellation nor an endless wait. Close only once the front ends
        have drained (Gateway.stop), so that nothing admitted is cut short here."""
        tasks = [t for t in (self._worker, *self._running) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._worker = None
        _fail(self._pending, BackendUnavailable("the scoring engine shut down before this call's batch ran; retry"))
        self._pending.clear()
        self._arrived.clear()
        self._full.clear()


def _fail(calls: list[_Call], error: Exception) -> None:
    for call in calls:
        if not call.future.done():
            call.future.set_exception(error)
