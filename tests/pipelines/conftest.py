"""Trained tiny models on synthetic chest films (``pipelines.synthetic``), shared by the trust-layer tests."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipelines.synthetic import render_cxr
from pipelines.train import TrainData, TrainResult, TrainSpec, train_classifier

CLASSES = ["NORMAL", "PNEUMONIA"]
FILM = 96  # film side in pixels; the model sees IMAGE_SIZE


def write_films(root: Path, name: str, n_per_class: int, *, seed: int, shuffle_labels: bool = False) -> list:
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    items = []
    for i in range(2 * n_per_class):
        y = i % 2
        img = np.rint(render_cxr(rng, pneumonia=bool(y), size=FILM) * 255).astype(np.uint8)
        path = root / f"{name}_{i:04d}.png"
        Image.fromarray(img, mode="L").save(path)
        items.append((path, int(rng.integers(0, 2)) if shuffle_labels else y))
    return items


@dataclass(frozen=True)
class Trained:
    result: TrainResult
    data: TrainData


def train_on_films(root: Path, *, shuffle_labels: bool, epochs: int) -> Trained:
    data = TrainData(
        CLASSES,
        write_films(root, "train", 50, seed=1, shuffle_labels=shuffle_labels),
        write_films(root, "val", 25, seed=2, shuffle_labels=shuffle_labels),
        write_films(root, "test", 25, seed=3, shuffle_labels=shuffle_labels),
    )
    spec = TrainSpec(
        "test_resnet", "full", epochs=epochs, image_size=48, batch_size=16, lr=3e-3, bootstrap_resamples=300
    )
    return Trained(train_classifier(spec, data, root / "job"), data)


@pytest.fixture(scope="session")
def films_model(tmp_path_factory: pytest.TempPathFactory) -> Trained:
    """test_resnet trained from scratch (8 epochs) on 100 synthetic films (50 val, 50 test): it learns the opacities."""
    return train_on_films(tmp_path_factory.mktemp("films"), shuffle_labels=False, epochs=8)


@pytest.fixture(scope="session")
def chance_model(tmp_path_factory: pytest.TempPathFactory) -> Trained:
    """The same recipe on shuffled labels, 2 epochs: nothing to learn."""
    return train_on_films(tmp_path_factory.mktemp("chance"), shuffle_labels=True, epochs=2)
