"""Where files live under the data dir. Paths in the database are relative to it,
so the same rows work on every host that mounts the shared volume elsewhere."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Storage:
    root: Path

    def ensure(self) -> Storage:
        for sub in ("uploads", "datasets", "jobs", "models"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        return self

    def upload_path(self, dataset_id: str) -> Path:
        return self.root / "uploads" / f"{dataset_id}.zip"

    def dataset_dir(self, dataset_id: str) -> Path:
        return self.root / "datasets" / dataset_id

    def job_dir(self, job_id: str) -> Path:
        return self.root / "jobs" / job_id

    def model_version_dir(self, model_name: str, version: int) -> Path:
        return self.root / "models" / model_name / f"v{version}"

    def relative(self, path: Path) -> str:
        return str(path.resolve().relative_to(self.root.resolve()))

    def resolve(self, relative: str) -> Path:
        return self.root / relative
