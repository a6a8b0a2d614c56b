"""Imports go one way: models never import pipelines (or anything above), backbones and weights do not
import each other in a cycle, and the registry and predictions modules take no FastAPI types."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def imported_modules(path: Path) -> set[str]:
    """Every module ``path`` imports, at module level or inside functions."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
        elif isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
    return out


@pytest.mark.parametrize("path", sorted((REPO / "models").glob("*.py")), ids=lambda p: p.name)
def test_models_import_nothing_above_them(path: Path) -> None:
    above = {m for m in imported_modules(path) if m.split(".")[0] in {"pipelines", "service", "worker", "hilum"}}
    assert not above, f"{path.name} imports {sorted(above)}"


def test_no_cycle_between_backbones_and_weights() -> None:
    backbones = imported_modules(REPO / "models" / "backbones.py")
    weights = imported_modules(REPO / "models" / "weights.py")
    assert not ("models.weights" in backbones and "models.backbones" in weights)


@pytest.mark.parametrize("name", ["registry", "predictions", "cards"])
def test_domain_modules_take_no_fastapi_types(name: str) -> None:
    modules = imported_modules(REPO / "service" / "domain" / f"{name}.py")
    web = {m for m in modules if m.split(".")[0] in {"fastapi", "starlette"} or m == "service.deps"}
    assert not web, f"service/domain/{name}.py imports {sorted(web)}"


TRAINING_READERS = [
    REPO / "worker" / "training.py",
    REPO / "pipelines" / "train.py",
    *sorted((REPO / "pipelines" / "training").glob("*.py")),
]


@pytest.mark.parametrize("path", TRAINING_READERS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_training_reads_datasets_only_through_the_dataset_module(path: Path) -> None:
    """The layout of a dataset version (manifest, image paths, splits) is known to pipelines/dataset.py alone."""
    direct = {m for m in imported_modules(path) if m in {"pipelines.ingest", "pipelines.splits"}}
    assert not direct, f"{path.name} imports {sorted(direct)}; read the dataset through pipelines.dataset"
    assert "manifest.jsonl" not in path.read_text()


def test_the_worker_stays_thin() -> None:
    """worker/training.py loads the spec, calls the pipeline and records the result: no dataset or torch logic."""
    modules = imported_modules(REPO / "worker" / "training.py")
    assert "pipelines.dataset" in modules and "pipelines.train" in modules
    assert not {m for m in modules if m.startswith("pipelines.training") or m == "pipelines.splits"}
    ingestion = imported_modules(REPO / "worker" / "ingestion.py")
    assert "hilum.tables" not in ingestion and "hilum.db" not in ingestion, "state goes through hilum.datasetstate"
