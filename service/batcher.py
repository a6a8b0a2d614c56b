"""Micro-batching: concurrent predictions for the same model version share one forward pass.

Requests wait at most ``max_wait_ms`` for company; a batch never exceeds ``max_batch``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from service.metrics import observe_batch

PredictFn = Callable[[Sequence[np.ndarray]], list[Any]]


@dataclass
class _Pending:
    pixels: np.ndarray
    future: asyncio.Future[Any]
    queued_at: float = field(default_factory=time.perf_counter)


@dataclass
class _Lane:
    queue: asyncio.Queue[_Pending] = field(default_factory=asyncio.Queue)
    task: asyncio.Task[None] | None = None


class MicroBatcher:
    """One lane per model version, each drained by its own asyncio task."""

    def __init__(self, *, max_batch: int = 16, max_wait_ms: float = 5.0, enabled: bool = True) -> None:
        self.max_batch = max_batch
        self.max_wait_s = max_wait_ms / 1000
        self.enabled = enabled
        self._lanes: dict[str, _Lane] = {}
        self.batches_run = 0

    async def predict(self, key: str, predict_fn: PredictFn, pixels: np.ndarray) -> Any:
        """The prediction for ``pixels``, computed alone or in a batch with concurrent requests."""
        if not self.enabled:
            observe_batch(1, [0.0])
            return (await asyncio.to_thread(predict_fn, [pixels]))[0]
        lane = self._lanes.setdefault(key, _Lane())
        if lane.task is None or lane.task.done():
            lane.task = asyncio.create_task(self._drain(lane, predict_fn))
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        await lane.queue.put(_Pending(pixels, future))
        return await future

    async def _drain(self, lane: _Lane, predict_fn: PredictFn) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                first = await asyncio.wait_for(lane.queue.get(), timeout=60)
            except TimeoutError:
                return  # an idle lane ends; the next request starts a new one
            batch = [first]
            deadline = loop.time() + self.max_wait_s
            while len(batch) < self.max_batch:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(lane.queue.get(), timeout=remaining))
                except TimeoutError:
                    break
            await self._run(batch, predict_fn)

    async def _run(self, batch: list[_Pending], predict_fn: PredictFn) -> None:
        self.batches_run += 1
        started = time.perf_counter()
        observe_batch(len(batch), [started - p.queued_at for p in batch])
        try:
            results = await asyncio.to_thread(predict_fn, [p.pixels for p in batch])
        except Exception as exc:  # every waiter learns of the failure
            for pending in batch:
                if not pending.future.done():
                    pending.future.set_exception(exc)
            return
        for pending, result in zip(batch, results, strict=True):
            if not pending.future.done():
                pending.future.set_result(result)
