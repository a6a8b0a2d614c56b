"""Ingestion: an uploaded zip -> an immutable, validated, normalised dataset folder.

Layouts:

* ``folders``: one folder per class (``NORMAL/x.png``), optionally under a single
  common top folder (``mydata/NORMAL/x.png``). Files directly at the root are rejected.
* ``csv``: a ``labels.csv`` at the root (or in the common top folder) with columns
  ``file,label[,patient_id]`` (comma, semicolon or tab separated); paths are relative
  to the CSV, a bare file name also matches a file in a subfolder when it is unique.
  When a CSV is present it wins over folder names. Rows naming missing files, files
  without a row, and rows with an empty or invalid label are reported as rejected.

Output (``out_dir``, built in a sibling temp dir and renamed into place at the end): a dataset version
in the layout ``pipelines.dataset`` owns (canonical PNGs, ``manifest.jsonl``, ``report.json``,
``rejections.jsonl``), written only through its ``write_*`` functions.

Identity: content hash = sha256 of the file bytes, sample id = its first 24 hex
characters, so identical files collapse. An exact duplicate with the same label is
reported and kept once; identical bytes under different labels are a *conflict*:
every copy is dropped (the label cannot be trusted) and reported.

Labels: every label (folder name or CSV cell) is normalised by one rule, ``normalise_label``: surrounding
whitespace stripped, inner runs of whitespace made one space, upper-cased (``pneumonia `` -> ``PNEUMONIA``).
Spellings merged that way are reported as a warning. An upload may declare its classes
(``IngestConfig.declared_classes``): a label outside them, or a declared class without files, refuses the
upload. Without a declaration, labels other than NORMAL and PNEUMONIA, or no PNEUMONIA class, are warnings.

Long reports: the report keeps the first ``REPORT_REJECTED_MAX`` rejections, their total and the counts by
reason; every rejection is in ``rejections.jsonl`` beside it (``load_rejections`` pages through it).
Duplicates and conflicts are listed up to the same number, with their totals.

Patients: patient key = sha256(salt + patient_id)[:32] where the patient id comes
from the CSV column, else the DICOM PatientID; with neither, each image is its own
patient (key derived from the content hash). Raw patient ids never reach disk or logs.

Source names: with ``IngestConfig.source_key`` (always, in the service) member paths are kept in the
manifest and the report only as pseudonyms, see ``pseudonymise_source``.
"""

from __future__ import annotations

import csv
import hashlib
import hmac
import io
import logging
import os
import re
import shutil
import struct
import uuid
import zipfile
import zlib
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from pipelines.archive import ArchiveEntry, ArchiveLimits, read_entry, scan_archive
from pipelines.dataset import (
    ManifestRow,
    discard_image,
    write_image,
    write_manifest,
    write_rejections,
    write_report,
)
from pipelines.imaging import ImageRejected
from pipelines.model_input import decode_checked

log = logging.getLogger(__name__)

LABELS_CSV = "labels.csv"
PATIENT_COLUMNS = ("patient_id", "patientid", "patient")
MAX_CSV_BYTES = 64 * 2**20
SAMPLE_ID_CHARS = 24
_LABEL_OK = re.compile(r"^[^\x00-\x1f/\\]{1,64}$")
EXPECTED_CLASSES = ("NORMAL", "PNEUMONIA")  # what a pneumonia classifier is normally trained on
POSITIVE_CLASS = "PNEUMONIA"
REPORT_REJECTED_MAX = 100  # rejections listed in the report itself; all of them are in REJECTIONS_FILE
REPORT_REASONS_MAX = 20  # distinct reasons counted in the report (the rest under "other reasons")


def normalise_label(raw: str) -> str:
    """The one label rule: strip, collapse inner whitespace to one space, upper-case."""
    return " ".join(raw.split()).upper()


@dataclass(frozen=True)
class IngestConfig:
    patient_salt: str
    max_side: int = 512
    limits: ArchiveLimits = ArchiveLimits()
    min_classes: int = 2
    classes: tuple[str, ...] | None = None  # when set, labels outside it are rejected per file
    # When set, the upload must hold exactly these classes (normalised): otherwise DatasetRejected.
    declared_classes: tuple[str, ...] | None = None
    # HMAC key of the stored source names (see pseudonymise_source); None keeps member paths as they are,
    # for tests and local tools only: the service always sets it (hilum/configs.py).
    source_key: str | None = None


class DatasetRejected(ValueError):
    """Dataset-level problem (no classes, one class, bad labels.csv); ``str(exc)`` says what to fix."""


@dataclass(frozen=True)
class UploadSummary:
    layout: str  # "folders" | "csv"
    classes: list[str]
    files: int


@dataclass
class IngestReport:
    layout: str
    accepted: int = 0
    classes: list[str] = field(default_factory=list)
    class_counts: dict[str, int] = field(default_factory=dict)
    imbalance_ratio: float | None = None
    patient_count: int = 0
    rejected: list[dict[str, str]] = field(default_factory=list)  # the first REPORT_REJECTED_MAX
    rejected_total: int = 0
    rejected_by_reason: dict[str, int] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    duplicates: list[dict[str, str]] = field(default_factory=list)  # the first REPORT_REJECTED_MAX
    duplicates_total: int = 0
    conflicts_total: int = 0
    conflicts: list[dict[str, object]] = field(default_factory=list)
    dicom_mix: dict[str, dict[str, int]] = field(
        default_factory=lambda: {"modalities": {}, "photometric": {}, "transfer_syntaxes": {}}
    )
    formats: dict[str, int] = field(default_factory=dict)
    max_side: int | None = None  # the canonical images' bound: training records it in the artifact for serving

    def to_dict(self) -> dict:
        """Plain JSON-serialisable dict."""
        return asdict(self)


def patient_key(salt: str, patient_id: str) -> str:
    """The salted hash stored instead of a patient id."""
    return hashlib.sha256((salt + patient_id).encode("utf-8")).hexdigest()[:32]


def pseudonymise_source(name: str, key: str, *, folder: str | None = None) -> str:
    """The stored form of a member's path: ``[folder/]<HMAC>.<ext>``.

    HMAC-SHA256 of the whole original path keyed with ``key`` (the service uses the patient salt), first
    16 hex characters; the extension is kept when it is 1-5 letters or digits; ``folder`` is the file's
    class. File and folder names often carry patient names, IDs or dates, so no part of them is kept.
    The same path gives the same pseudonym in every report of one deployment.
    """
    digest = hmac.new(key.encode("utf-8"), name.encode("utf-8"), hashlib.sha256).hexdigest()[:16]
    base = name.rsplit("/", 1)[-1]
    suffix = base.rpartition(".")[2].lower() if "." in base else ""
    ext = f".{suffix}" if re.fullmatch(r"[a-z0-9]{1,5}", suffix) else ""
    return f"{folder}/{digest}{ext}" if folder else digest + ext


def _pseudonymise(report: IngestReport, rows: list[ManifestRow], key: str) -> list[ManifestRow]:
    """Replace every member path in the report and the manifest rows by its pseudonym."""
    for entries, fields in ((report.rejected, ("file",)), (report.duplicates, ("file", "duplicate_of"))):
        for entry in entries:
            for f in fields:
                if f in entry:
                    entry[f] = pseudonymise_source(entry[f], key)
    for conflict in report.conflicts:
        for f in ("file", "other"):
            if isinstance(conflict.get(f), str):
                conflict[f] = pseudonymise_source(str(conflict[f]), key)
    return [replace(r, source_name=pseudonymise_source(r.source_name, key, folder=r.label)) for r in rows]


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def encode_png(pixels: np.ndarray) -> bytes:
    """Lossless 8-bit grayscale PNG of a (H, W) uint8 array.

    A minimal writer (Sub filter + zlib level 1) about twice as fast as Pillow's adaptive
    filtering at the same size; any PNG reader opens it.
    """
    u8 = np.ascontiguousarray(pixels, dtype=np.uint8)
    h, w = u8.shape
    raw = np.empty((h, w + 1), dtype=np.uint8)
    raw[:, 0] = 1  # filter type 1: Sub (each byte minus its left neighbour, mod 256)
    raw[:, 1] = u8[:, 0]
    np.subtract(u8[:, 1:], u8[:, :-1], out=raw[:, 2:])
    header = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)  # 8-bit, greyscale, deflate, no interlace
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", zlib.compress(raw.tobytes(), 1))
        + _png_chunk(b"IEND", b"")
    )


# --------------------------------------------------------------------------- planning (cheap)


@dataclass(frozen=True)
class _Item:
    entry: ArchiveEntry
    rel: str  # path below the common top folder
    label: str | None  # None: rejected for ``reason``
    patient_id: str | None = None
    reason: str = ""


@dataclass(frozen=True)
class _Plan:
    layout: str
    classes: list[str]
    items: list[_Item]
    missing: list[str]  # CSV rows naming files not in the zip
    warnings: list[str] = field(default_factory=list)


def _common_prefix(names: list[str]) -> str:
    """The single top folder to strip ('' if none): every nested file lies under it, with 2+ folders inside.

    Files at the root (a stray README.txt) do not prevent stripping; they are rejected later.
    """
    nested = [n for n in names if "/" in n]
    firsts = {n.split("/", 1)[0] for n in nested}
    if len(firsts) != 1:
        return ""
    top = next(iter(firsts))
    subfolders = {n.split("/")[1] for n in nested if n.count("/") >= 2}
    return top + "/" if len(subfolders) >= 2 else ""


def _plan(zip_path: Path, config: IngestConfig) -> _Plan:
    entries = scan_archive(zip_path, config.limits)
    # labels.csv at the root, or in the single top folder that holds everything.
    csv_entry = next((e for e in entries if e.name.lower() == LABELS_CSV), None)
    prefix = ""
    if csv_entry is None:
        firsts = {e.name.split("/", 1)[0] for e in entries}
        if len(firsts) == 1 and all("/" in e.name for e in entries):
            top = next(iter(firsts)) + "/"
            csv_entry = next((e for e in entries if e.name.lower() == (top + LABELS_CSV).lower()), None)
            if csv_entry is not None:
                prefix = top
    if csv_entry is None:
        prefix = _common_prefix([e.name for e in entries])
    images = [e for e in entries if e is not csv_entry]
    if csv_entry is not None:
        with zipfile.ZipFile(zip_path) as zf:
            text = _read_csv_text(zf, csv_entry, config.limits)
        return _plan_csv(text, images, prefix, config)
    return _plan_folders(images, prefix, config)


def _read_csv_text(zf: zipfile.ZipFile, entry: ArchiveEntry, limits: ArchiveLimits) -> str:
    if entry.size > MAX_CSV_BYTES:
        raise DatasetRejected(f"labels.csv is larger than {MAX_CSV_BYTES // 2**20} MiB")
    try:
        data = read_entry(zf, entry, limits)
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError) as exc:
        raise DatasetRejected(f"labels.csv is damaged or unreadable in the zip ({exc})") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def _check_label(label: str, config: IngestConfig) -> str:
    """'' if the label is usable, else the reason."""
    if not label:
        return "empty label"
    if not _LABEL_OK.match(label):
        return f"label {label!r} is not a valid class name (1-64 characters, no slashes)"
    if config.classes is not None and label not in {normalise_label(c) for c in config.classes}:
        return f"unknown label {label!r} (expected one of: {', '.join(config.classes)})"
    return ""


def _plan_folders(images: list[ArchiveEntry], prefix: str, config: IngestConfig) -> _Plan:
    items: list[_Item] = []
    spellings: dict[str, set[str]] = {}
    for e in images:
        rel = e.name[len(prefix) :] if e.name.startswith(prefix) else e.name
        if "/" not in rel or not e.name.startswith(prefix):
            items.append(_Item(e, rel, None, reason="file is not inside a class folder"))
            continue
        raw = rel.split("/", 1)[0]
        label = normalise_label(raw)
        reason = _check_label(label, config)
        items.append(_Item(e, rel, None if reason else label, reason=reason))
        if not reason:
            spellings.setdefault(label, set()).add(raw)
    classes = sorted({i.label for i in items if i.label is not None})
    if not classes:
        raise DatasetRejected(
            "no class folders found: put the images in one folder per class (e.g. NORMAL/, PNEUMONIA/) "
            "or add a labels.csv with columns file,label"
        )
    _check_class_count(classes, config, "class folder")
    return _Plan("folders", classes, items, [], _check_classes(classes, items, spellings, config))


def _check_class_count(classes: list[str], config: IngestConfig, what: str) -> None:
    if len(classes) < config.min_classes:
        raise DatasetRejected(
            f"only {len(classes)} {what}{'s' if len(classes) != 1 else ''} found "
            f"({', '.join(classes)}); at least {config.min_classes} classes are needed"
        )


def _parse_csv(text: str) -> tuple[list[str], list[list[str]]]:
    """Header (lower-cased) and rows; the delimiter is ',' unless the header uses ';' or tabs (Excel exports)."""
    first = text.split("\n", 1)[0]
    delimiter = max((",", ";", "\t"), key=first.count) if first else ","
    try:
        rows = list(csv.reader(io.StringIO(text), delimiter=delimiter))
    except csv.Error as exc:
        raise DatasetRejected(f"labels.csv is not a readable CSV file ({exc})") from None
    if not rows:
        raise DatasetRejected("labels.csv is empty; it needs a header row with columns file,label")
    return [h.strip().lower() for h in rows[0]], rows[1:]


def _plan_csv(text: str, images: list[ArchiveEntry], prefix: str, config: IngestConfig) -> _Plan:
    cols, reader = _parse_csv(text)
    for needed in ("file", "label"):
        if needed not in cols:
            raise DatasetRejected(f"labels.csv has no '{needed}' column (found: {', '.join(cols) or 'none'})")
    fi, li = cols.index("file"), cols.index("label")
    pi = next((cols.index(c) for c in PATIENT_COLUMNS if c in cols), None)

    by_rel = {e.name[len(prefix) :]: e for e in images if e.name.startswith(prefix)}
    base_counts = Counter(rel.rsplit("/", 1)[-1] for rel in by_rel)
    by_base = {rel.rsplit("/", 1)[-1]: e for rel, e in by_rel.items()}
    listed: dict[str, _Item] = {}
    missing: list[str] = []
    spellings: dict[str, set[str]] = {}
    for row in reader:
        if not row or all(not c.strip() for c in row):
            continue
        fname = "/".join(p for p in _cell(row, fi).replace("\\", "/").split("/") if p not in ("", "."))
        if not fname:
            continue
        entry = by_rel.get(fname)
        if entry is None and "/" not in fname and base_counts.get(fname) == 1:
            entry = by_base[fname]
        if entry is None:
            missing.append(fname)
            continue
        rel = entry.name[len(prefix) :]
        if rel in listed:
            continue  # a repeated row: the first wins
        raw = row[li] if li < len(row) else ""
        label = normalise_label(raw)
        reason = _check_label(label, config)
        listed[rel] = _Item(entry, rel, None if reason else label, _cell(row, pi) or None, reason)
        if not reason:
            spellings.setdefault(label, set()).add(raw)
    items = list(listed.values())
    for rel, e in by_rel.items():
        if rel not in listed:
            items.append(_Item(e, rel, None, reason="not listed in labels.csv"))
    items.extend(
        _Item(e, e.name, None, reason="outside the folder of labels.csv")
        for e in images
        if not e.name.startswith(prefix)
    )
    classes = sorted({i.label for i in items if i.label is not None})
    if not classes:
        raise DatasetRejected(
            f"labels.csv names no file of the zip with a usable label ({len(missing)} rows name missing files)"
        )
    _check_class_count(classes, config, "label")
    return _Plan("csv", classes, items, missing, _check_classes(classes, items, spellings, config))


def _check_classes(
    classes: list[str], items: list[_Item], spellings: dict[str, set[str]], config: IngestConfig
) -> list[str]:
    """Refuse an upload that breaks its declared classes; return the warnings about its labels."""
    counts = Counter(i.label for i in items if i.label is not None)
    if config.declared_classes is not None:
        declared = sorted({normalise_label(c) for c in config.declared_classes if c.strip()})
        extra = [c for c in classes if c not in declared]
        if extra:
            listed = ", ".join(f"{c} ({counts[c]} file{'s' if counts[c] != 1 else ''})" for c in extra)
            raise DatasetRejected(
                f"labels {listed} are not among the declared classes {', '.join(declared)} "
                f"(the upload has: {', '.join(classes)})"
            )
        absent = [c for c in declared if c not in counts]
        if absent:
            raise DatasetRejected(
                f"no files for the declared class {', '.join(absent)} (the upload has: {', '.join(classes)})"
            )
    warnings = []
    for label, raws in sorted(spellings.items()):
        if raws != {label}:
            shown = ", ".join(repr(r) for r in sorted(raws))
            verb = "merged" if len(raws) > 1 else "renamed"
            warnings.append(f"label spellings {verb} by the label rule (strip, upper-case): {shown} -> {label}")
    if config.declared_classes is None:
        unusual = [c for c in classes if c not in EXPECTED_CLASSES]
        if unusual:
            warnings.append(
                f"unexpected class{'es' if len(unusual) > 1 else ''} {', '.join(unusual)}: a pneumonia model is "
                f"usually trained on {', '.join(EXPECTED_CLASSES)}; declare the classes to make this explicit"
            )
        if POSITIVE_CLASS not in classes:
            warnings.append(f"no {POSITIVE_CLASS} class: the model will not learn to recognise pneumonia")
    return warnings


def _cell(row: list[str], index: int | None) -> str:
    return row[index].strip() if index is not None and index < len(row) else ""


def inspect_upload(zip_path: Path, config: IngestConfig) -> UploadSummary:
    """Cheap check of an upload (central directory and labels.csv only; no image decoding).

    Raises ArchiveRejected or DatasetRejected.
    """
    plan = _plan(Path(zip_path), config)
    return UploadSummary(layout=plan.layout, classes=plan.classes, files=sum(i.label is not None for i in plan.items))


# --------------------------------------------------------------------------- ingestion


def ingest_archive(
    zip_path: Path,
    out_dir: Path,
    config: IngestConfig,
    *,
    progress: Callable[[int, int], None] | None = None,
) -> IngestReport:
    """Decode, validate and normalise every image of ``zip_path`` into the new folder ``out_dir``.

    Atomic: ``out_dir`` appears complete or not at all. ``progress(done, total)`` is
    called after each file if given. Raises ArchiveRejected, DatasetRejected, or
    FileExistsError if ``out_dir`` exists.
    """
    out_dir = Path(out_dir)
    if out_dir.exists():
        raise FileExistsError(f"{out_dir} already exists; dataset versions are immutable")
    plan = _plan(Path(zip_path), config)
    tmp = out_dir.parent / f".{out_dir.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir(parents=True)
    try:
        report = _ingest_into(Path(zip_path), tmp, plan, config, progress)
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info(
        "ingested %d images (%d rejected, %d duplicates, %d conflicts) into %s",
        report.accepted,
        len(report.rejected),
        len(report.duplicates),
        len(report.conflicts),
        out_dir.name,
    )
    return report


@dataclass
class _Kept:
    row: ManifestRow
    label: str


def _ingest_into(
    zip_path: Path,
    tmp: Path,
    plan: _Plan,
    config: IngestConfig,
    progress: Callable[[int, int], None] | None,
) -> IngestReport:
    report = IngestReport(layout=plan.layout, warnings=list(plan.warnings), max_side=config.max_side)
    report.rejected.extend({"file": m, "reason": "listed in labels.csv but not in the zip"} for m in plan.missing)
    kept: dict[str, _Kept] = {}  # content hash -> first accepted copy
    failed: dict[str, str] = {}  # content hash -> rejection reason
    conflicted: dict[str, list[str]] = {}  # content hash -> labels seen
    items = sorted(plan.items, key=lambda i: i.entry.name)
    mix = report.dicom_mix
    with zipfile.ZipFile(zip_path) as zf:
        for n, item in enumerate(items, 1):
            if progress is not None:
                progress(n - 1, len(items))
            if item.label is None:
                report.rejected.append({"file": item.entry.name, "reason": item.reason})
                continue
            try:
                data = read_entry(zf, item.entry, config.limits)
            except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as exc:
                log.debug("damaged member: %s", type(exc).__name__)  # the message may name the file
                report.rejected.append({"file": item.entry.name, "reason": "the file is damaged inside the zip"})
                continue
            except NotImplementedError:  # zipfile cannot read this member's compression (e.g. Deflate64)
                reason = "the file is compressed with a method that cannot be read (use deflate or none)"
                report.rejected.append({"file": item.entry.name, "reason": reason})
                continue
            digest = hashlib.sha256(data).hexdigest()
            if digest in failed:
                report.rejected.append({"file": item.entry.name, "reason": failed[digest]})
                continue
            if digest in kept or digest in conflicted:
                _record_repeat(report, kept, conflicted, digest, item, tmp)
                continue
            try:
                decoded = decode_checked(data, max_side=config.max_side)
            except ImageRejected as exc:
                failed[digest] = str(exc)
                report.rejected.append({"file": item.entry.name, "reason": str(exc)})
                continue
            del data
            sample_id = digest[:SAMPLE_ID_CHARS]
            write_image(tmp, sample_id, encode_png(decoded.pixels))
            pid = item.patient_id or decoded.patient_id
            # Without a patient id, each distinct image is its own patient.
            key = patient_key(config.patient_salt, pid or "content:" + digest)
            kept[digest] = _Kept(
                ManifestRow(
                    sample_id=sample_id,
                    label=item.label,
                    patient_key=key,
                    source_name=item.entry.name,
                    content_hash=digest,
                    width=decoded.width,
                    height=decoded.height,
                    source_format=decoded.source_format,
                ),
                item.label,
            )
            report.formats[decoded.source_format] = report.formats.get(decoded.source_format, 0) + 1
            if decoded.dicom is not None:
                d = decoded.dicom
                for bucket, value in (
                    ("modalities", d.modality or "unknown"),
                    ("photometric", d.photometric),
                    ("transfer_syntaxes", d.transfer_syntax),
                ):
                    mix[bucket][value] = mix[bucket].get(value, 0) + 1
        if progress is not None:
            progress(len(items), len(items))
    _finish(report, kept, tmp, config)
    return report


def _record_repeat(
    report: IngestReport,
    kept: dict[str, _Kept],
    conflicted: dict[str, list[str]],
    digest: str,
    item: _Item,
    tmp: Path,
) -> None:
    """A file whose bytes were seen before: a duplicate (same label) or a conflict (different label)."""
    assert item.label is not None
    if digest in conflicted:
        report.conflicts.append({"file": item.entry.name, "other": conflicted[digest][0], "labels": [item.label]})
        return
    first = kept[digest]
    if first.label == item.label:
        report.duplicates.append({"file": item.entry.name, "duplicate_of": first.row.source_name})
        return
    # Same bytes, different labels: drop every copy.
    report.conflicts.append(
        {"file": item.entry.name, "other": first.row.source_name, "labels": sorted({first.label, item.label})}
    )
    conflicted[digest] = [first.row.source_name]
    discard_image(tmp, first.row.sample_id)
    del kept[digest]


def _finish(report: IngestReport, kept: dict[str, _Kept], tmp: Path, config: IngestConfig) -> None:
    rows = [k.row for k in kept.values()]
    if config.source_key is not None:
        rows = _pseudonymise(report, rows, config.source_key)
    rows.sort(key=lambda r: r.source_name)
    counts = Counter(r.label for r in rows)
    report.accepted = len(rows)
    report.classes = sorted(counts)
    report.class_counts = {c: counts[c] for c in report.classes}
    report.imbalance_ratio = round(max(counts.values()) / min(counts.values()), 3) if counts else None
    report.patient_count = len({r.patient_key for r in rows})
    if len(counts) < config.min_classes:
        reasons = Counter(r["reason"] for r in report.rejected).most_common(3)
        detail = "; ".join(f"{n} x {reason}" for reason, n in reasons)
        raise DatasetRejected(
            f"after decoding, only {len(counts)} class{'es' if len(counts) != 1 else ''} "
            f"({', '.join(report.classes) or 'none'}) have usable images; at least {config.min_classes} are needed"
            + (f" (rejected: {detail})" if detail else "")
        )
    _summarise_rejections(report, tmp)
    write_manifest(tmp, rows)
    write_report(tmp, report.to_dict())


def _summarise_rejections(report: IngestReport, out: Path) -> None:
    """Every rejection to ``REJECTIONS_FILE``; the report keeps the first few, the total and counts by reason."""
    write_rejections(out, report.rejected)
    reasons = Counter(r["reason"] for r in report.rejected)
    top = dict(reasons.most_common(REPORT_REASONS_MAX))
    rest = sum(reasons.values()) - sum(top.values())
    report.rejected_total = len(report.rejected)
    report.rejected_by_reason = top | ({"other reasons": rest} if rest else {})
    report.rejected = report.rejected[:REPORT_REJECTED_MAX]
    report.duplicates_total, report.conflicts_total = len(report.duplicates), len(report.conflicts)
    report.duplicates = report.duplicates[:REPORT_REJECTED_MAX]
    report.conflicts = report.conflicts[:REPORT_REJECTED_MAX]
