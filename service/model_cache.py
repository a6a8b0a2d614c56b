"""Predictors loaded once per process, keyed by model version, bounded by count and memory (LRU).

On a GPU the bound is also the device's memory: ``max_gpu_bytes`` caps what the cached networks hold there,
so a stream of versions never pushes the activations of a large batch out of memory.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from pathlib import Path

from pipelines.infer import Predictor
from service.metrics import observe_cache


def model_bytes(predictor: Predictor) -> int:
    """Bytes held by the predictor's network (parameters and buffers)."""
    model = getattr(predictor, "model", None)
    if model is None:
        return 0
    tensors = [*model.parameters(), *model.buffers()]
    return sum(t.numel() * t.element_size() for t in tensors)


class ModelCache:
    def __init__(
        self,
        max_models: int = 4,
        max_bytes: int = 2 * 2**30,
        device: str = "cpu",
        *,
        precision: str = "auto",
        max_gpu_bytes: int | None = None,
    ) -> None:
        self.max_models = max_models
        self.max_bytes = max_bytes
        self.device = device
        self.precision = precision
        self.max_gpu_bytes = max_gpu_bytes
        self._items: OrderedDict[str, tuple[Predictor, int]] = OrderedDict()
        self._lock = threading.Lock()
        self._loading: dict[str, threading.Lock] = {}

    def get(self, version_id: str, artifact_path: Path) -> Predictor:
        """The predictor of ``version_id``, loading it on first use (once, even under concurrency).

        Evicting a model only drops the cache's reference: requests in flight keep theirs.
        """
        with self._lock:
            if version_id in self._items:
                self._items.move_to_end(version_id)
                observe_cache("hit")
                return self._items[version_id][0]
            load_lock = self._loading.setdefault(version_id, threading.Lock())
        with load_lock:
            with self._lock:
                if version_id in self._items:
                    return self._items[version_id][0]
            predictor = Predictor.load(artifact_path, device=self.device, precision=self.precision)
            observe_cache("load")
            with self._lock:
                self._items[version_id] = (predictor, model_bytes(predictor))
                self._loading.pop(version_id, None)
                self._evict()
            return predictor

    def _evict(self) -> None:
        while len(self._items) > 1 and self._over_budget():
            self._items.popitem(last=False)
            observe_cache("eviction")

    def _over_budget(self) -> bool:
        if len(self._items) > self.max_models or self.total_bytes > self.max_bytes:
            return True
        # The model bytes are on the GPU when the device is one; the cap keeps room for activations.
        return self.max_gpu_bytes is not None and self.on_device and self.total_bytes > self.max_gpu_bytes

    @property
    def on_device(self) -> bool:
        return any(p.device.type == "cuda" for p, _ in self._items.values() if hasattr(p, "device"))

    @property
    def total_bytes(self) -> int:
        return sum(size for _, size in self._items.values())

    def __contains__(self, version_id: str) -> bool:
        return version_id in self._items

    def __len__(self) -> int:
        return len(self._items)
