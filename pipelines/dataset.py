"""A dataset version on disk: its layout, its manifest, its images, and its patient-level splits.

Ingestion (``pipelines.ingest``) builds a version in a temp folder through the ``write_*`` functions and
renames it into place; everything else reads it through ``DatasetVersion``. Layout of a version folder:

* ``images/<sample_id>.png``: the canonical uint8 image (lossless), one per accepted film;
* ``manifest.jsonl``: one ``ManifestRow`` per image (label, salted patient key, pseudonymised source name);
* ``report.json``: the ingestion report (counts, rejections summary, DICOM mix, the canonical bound);
* ``rejections.jsonl``: every rejected file with its reason (the report lists only the first few).

A version is immutable once renamed into place: training on it twice with one seed sees the same splits.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pipelines.splits import SplitItem, carve_calibration, patient_splits
from pipelines.training.spec import TrainData

MANIFEST_FILE = "manifest.jsonl"
REPORT_FILE = "report.json"
REJECTIONS_FILE = "rejections.jsonl"
IMAGES_DIR = "images"


@dataclass(frozen=True)
class ManifestRow:
    """One accepted film: never a raw patient id or file name (both are keyed hashes)."""

    sample_id: str
    label: str
    patient_key: str
    source_name: str
    content_hash: str
    width: int
    height: int
    source_format: str


def image_path(root: Path, sample_id: str) -> Path:
    """Where the canonical PNG of ``sample_id`` lives in the version folder ``root``."""
    return Path(root) / IMAGES_DIR / f"{sample_id}.png"


def write_image(root: Path, sample_id: str, png: bytes) -> None:
    path = image_path(root, sample_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(png)


def discard_image(root: Path, sample_id: str) -> None:
    image_path(root, sample_id).unlink(missing_ok=True)


def write_manifest(root: Path, rows: Iterable[ManifestRow]) -> None:
    with open(Path(root) / MANIFEST_FILE, "w", encoding="utf-8") as fh:
        for r in rows:
            fh.write(json.dumps(asdict(r), sort_keys=True) + "\n")


def write_report(root: Path, report: dict[str, Any]) -> None:
    (Path(root) / REPORT_FILE).write_text(json.dumps(report, indent=2, sort_keys=True), encoding="utf-8")


def write_rejections(root: Path, entries: Iterable[dict[str, str]]) -> None:
    with open(Path(root) / REJECTIONS_FILE, "w", encoding="utf-8") as fh:
        for entry in entries:
            fh.write(json.dumps(entry, sort_keys=True) + "\n")


def load_manifest(root: Path) -> list[ManifestRow]:
    """The manifest rows of a version folder, in stored order."""
    rows = []
    with open(Path(root) / MANIFEST_FILE, encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                rows.append(ManifestRow(**json.loads(line)))
    return rows


def load_report(root: Path) -> dict[str, Any]:
    return json.loads((Path(root) / REPORT_FILE).read_text(encoding="utf-8"))


def load_rejections(root: Path, *, offset: int = 0, limit: int = 100) -> tuple[int, list[dict[str, str]]]:
    """(total, rejections[offset:offset + limit]) of a version, read from ``rejections.jsonl``."""
    total, page = 0, []
    with open(Path(root) / REJECTIONS_FILE, encoding="utf-8") as fh:
        for line in fh:
            if not line.strip():
                continue
            if offset <= total < offset + limit:
                page.append(json.loads(line))
            total += 1
    return total, page


class DatasetVersion:
    """Read access to one ingested, immutable dataset version (the folder ``root``)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        if not (self.root / MANIFEST_FILE).is_file():
            raise FileNotFoundError(f"{self.root} is not an ingested dataset version (no {MANIFEST_FILE})")
        self._rows: list[ManifestRow] | None = None

    def rows(self) -> list[ManifestRow]:
        if self._rows is None:
            self._rows = load_manifest(self.root)
        return self._rows

    def report(self) -> dict[str, Any]:
        return load_report(self.root)

    def image_path(self, sample_id: str) -> Path:
        return image_path(self.root, sample_id)

    def class_names(self) -> list[str]:
        """Sorted class names; label indices everywhere index into this list."""
        return sorted({r.label for r in self.rows()})

    def max_side(self) -> int | None:
        """The longest side the canonical images were bounded to at ingestion (None for old versions)."""
        value = self.report().get("max_side")
        return int(value) if value else None

    def splits(self, *, seed: int) -> dict[str, list[SplitItem]]:
        """Patient-level stratified splits: train, val (model selection), calibration, test.

        ``calibration`` is carved patient-level out of validation when validation is large enough for both
        halves to be used (see ``carve_calibration``); otherwise it is empty and validation serves both.
        """
        items = [SplitItem(r.sample_id, r.label, r.patient_key) for r in self.rows()]
        out = patient_splits(items, seed=seed)
        out["val"], out["calibration"] = carve_calibration(out["val"], seed=seed)
        return out

    def train_data(self, *, seed: int) -> TrainData:
        """The splits as (canonical PNG path, label index) pairs, which is what training reads."""
        names = self.class_names()
        index = {name: i for i, name in enumerate(names)}

        def pairs(items: list[SplitItem]) -> list[tuple[Path, int]]:
            return [(self.image_path(i.sample_id), index[i.label]) for i in items]

        s = self.splits(seed=seed)
        return TrainData(
            class_names=names,
            train=pairs(s["train"]),
            val=pairs(s["val"]),
            test=pairs(s["test"]),
            calibration=pairs(s["calibration"]),
        )
