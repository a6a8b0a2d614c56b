from __future__ import annotations

import asyncio
from collections.abc import Sequence

import numpy as np

from service.batcher import MicroBatcher


class CountingModel:
    def __init__(self) -> None:
        self.calls: list[int] = []

    def __call__(self, images: Sequence[np.ndarray]) -> list[float]:
        self.calls.append(len(images))
        return [float(img.mean()) for img in images]


def run_concurrently(batcher: MicroBatcher, model: CountingModel, n: int) -> list[float]:
    async def main() -> list[float]:
        images = [np.full((4, 4), i, dtype=np.uint8) for i in range(n)]
        return await asyncio.gather(*(batcher.predict("v1", model, img) for img in images))

    return asyncio.run(main())


def test_concurrent_requests_share_forward_passes_and_keep_their_answers() -> None:
    model = CountingModel()
    results = run_concurrently(MicroBatcher(max_batch=8, max_wait_ms=50), model, 20)
    assert results == [float(i) for i in range(20)]
    assert sum(model.calls) == 20 and max(model.calls) == 8 and len(model.calls) <= 4


def test_disabled_batcher_runs_one_at_a_time() -> None:
    model = CountingModel()
    assert run_concurrently(MicroBatcher(enabled=False), model, 5) == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert model.calls == [1] * 5


def test_a_failing_batch_fails_each_waiter() -> None:
    def broken(images: Sequence[np.ndarray]) -> list[float]:
        raise RuntimeError("boom")

    async def main() -> None:
        batcher = MicroBatcher(max_wait_ms=20)
        results = await asyncio.gather(
            *(batcher.predict("v", broken, np.zeros((2, 2), np.uint8)) for _ in range(3)), return_exceptions=True
        )
        assert all(isinstance(r, RuntimeError) for r in results)

    asyncio.run(main())
