"""Predictors loaded once per process, keyed by model version, with an LRU bound."""

from __future__ import annotations

import threading
from collections import OrderedDict
from pathlib import Path

from pipelines.infer import Predictor


class ModelCache:
    def __init__(self, max_models: int = 4, device: str = "cpu") -> None:
        self.max_models = max_models
        self.device = device
        self._items: OrderedDict[str, Predictor] = OrderedDict()
        self._lock = threading.Lock()
        self._loading: dict[str, threading.Lock] = {}

    def get(self, version_id: str, artifact_path: Path) -> Predictor:
        """The predictor of ``version_id``, loading it on first use (once, even under concurrency)."""
        with self._lock:
            if version_id in self._items:
                self._items.move_to_end(version_id)
                return self._items[version_id]
            load_lock = self._loading.setdefault(version_id, threading.Lock())
        with load_lock:
            with self._lock:
                if version_id in self._items:
                    return self._items[version_id]
            predictor = Predictor.load(artifact_path, device=self.device)
            with self._lock:
                self._items[version_id] = predictor
                self._loading.pop(version_id, None)
                while len(self._items) > self.max_models:
                    self._items.popitem(last=False)
            return predictor

    def __len__(self) -> int:
        return len(self._items)
