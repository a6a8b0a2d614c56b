"""Answering predictions and logging them (no FastAPI types here: routes hand over bytes).

One upload goes through ``pipelines.model_input.prepare`` with the artifact's own preprocessing, the
cached model (micro-batched) answers at the registry's threshold, and the answer carries everything a
clinician needs to weigh it: the operating point with its intervals, the conformal prediction set,
whether the film looks like the training films (the label is withheld when it does not, unless asked),
whether the model was pretrained and fit for use, and plain-words warnings.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import hashlib
import io
import time
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from hilum.storage import Storage
from hilum.tables import ModelVersion, Prediction
from models.artifact import ClassifierArtifact
from pipelines.imaging import ImageRejected
from pipelines.infer import Prediction as InferredPrediction
from pipelines.infer import Predictor
from pipelines.model_input import PreparedInput, prepare, preprocessing_of
from service.batcher import MicroBatcher
from service.domain import registry
from service.errors import Invalid
from service.metrics import observe_prediction
from service.model_cache import ModelCache
from service.schemas.models import BatchItem, BatchPrediction, Heatmap, PredictionPublic

DEFAULT_SCALE = {
    "min": 0.0,
    "max": 1.0,
    "colormap": "jet",
    "meaning": "Grad-CAM evidence for the named class: transparent at 0, red at 1",
}


@dataclass(frozen=True)
class Serving:
    """What answering needs, bundled once per request: storage, the model cache, the batcher and limits."""

    storage: Storage
    cache: ModelCache
    batcher: MicroBatcher
    max_image_bytes: int
    batch_max_files: int


@dataclass(frozen=True)
class Options:
    """The caller's choices for one prediction."""

    label_when_ood: bool = False
    heatmap: bool = False
    heatmap_class: str | None = None
    heatmap_array: bool = False
    tta: bool = False  # average the logits over a few anatomy-safe variants of the film


# --------------------------------------------------------------------------- one prediction


def prepare_upload(data: bytes, preprocessing: dict[str, Any]) -> PreparedInput:
    """The one input path, with an unusable file turned into a 422 that names the problem."""
    try:
        return prepare(data, preprocessing)
    except ImageRejected as exc:
        raise Invalid(f"cannot use this file: {exc}") from exc


async def answer(
    session: Session,
    resolved: registry.Resolved,
    data: bytes,
    *,
    serving: Serving,
    options: Options = Options(),  # noqa: B008 (frozen dataclass)
) -> tuple[PredictionPublic, str, PreparedInput, Predictor]:
    """(the answer, the model's label for the log, the prepared input, the predictor)."""
    row = resolved.row
    predictor = await asyncio.to_thread(serving.cache.get, row.id, serving.storage.resolve(row.artifact_path))
    artifact = predictor.artifact
    if options.heatmap_class is not None and options.heatmap_class not in artifact.class_names:
        raise Invalid(f"unknown heatmap_class '{options.heatmap_class}'; classes: {', '.join(artifact.class_names)}")
    prepared = await asyncio.to_thread(prepare_upload, data, preprocessing_of(artifact))
    threshold = row.threshold if row.threshold is not None else artifact.threshold
    # One micro-batching lane per (version, threshold, tta): a changed threshold never meets a lane made before it.
    predict_fn = functools.partial(predictor.predict, threshold=threshold, tta=options.tta)
    lane = f"{row.id}@{threshold}" + ("@tta" if options.tta else "")
    result = await serving.batcher.predict(lane, predict_fn, prepared.pixels)
    model_label = result.label
    op, op_warnings = registry.operating_point(session, row, artifact, storage=serving.storage)
    public = _shape(row, artifact, result, model_label, threshold, data, options)
    public.operating_point = op
    public.warnings = [*resolved.warnings, *public.warnings, *op_warnings]
    return public, model_label, prepared, predictor


def scratch_warning(artifact: ClassifierArtifact) -> str:
    return (
        f"trained from random weights (weights: {artifact.weights or 'none'}), not from pretrained weights: "
        "expect weaker, less stable results"
    )


def _shape(
    row: ModelVersion,
    artifact: ClassifierArtifact,
    result: InferredPrediction,
    model_label: str,
    threshold: float | None,
    data: bytes,
    options: Options,
) -> PredictionPublic:
    warnings: list[str] = []
    in_distribution, ood_score, ood_threshold = result.in_distribution, result.ood_score, result.ood_threshold
    withheld = in_distribution is False and not options.label_when_ood
    if in_distribution is False:
        score = ""
        if ood_score is not None and ood_threshold is not None:
            score = f" (out-of-distribution score {ood_score:.3g} above {ood_threshold:.3g})"
        warnings.append(
            f"this film looks unlike the films the model was trained on{score}: "
            + ("label withheld; ask with label_when_ood=true to see it" if withheld else "do not rely on the label")
        )
    prediction_set, coverage = result.prediction_set, result.coverage
    if prediction_set is not None and len(prediction_set) >= len(artifact.class_names) > 1:
        at = f"{coverage:.0%} " if coverage else ""
        warnings.append(f"uncertain: the {at}prediction set holds every class; refer to a radiologist")
    pretrained = artifact.pretrained
    if pretrained is False:
        warnings.append(scratch_warning(artifact))
    return PredictionPublic(
        model=row.model_name,
        version=row.version,
        label=None if withheld else model_label,
        label_withheld=withheld,
        probabilities=result.probabilities,
        positive_class=result.positive_class,
        threshold=threshold,
        prediction_set=None if prediction_set is None else list(prediction_set),
        coverage=coverage,
        in_distribution=in_distribution,
        ood_score=ood_score,
        ood_threshold=ood_threshold,
        pretrained=pretrained,
        fit_for_use=bool(row.fit_for_use),
        warnings=warnings,
        input_sha256=hashlib.sha256(data).hexdigest(),
        tta=result.tta,
    )


async def predict_and_record(
    session: Session,
    resolved: registry.Resolved,
    data: bytes,
    *,
    serving: Serving,
    options: Options,
    key_id: str,
    started: float,
) -> PredictionPublic:
    """One prediction (with its heatmap when asked), logged against the caller's key."""
    public, model_label, prepared, predictor = await answer(session, resolved, data, serving=serving, options=options)
    if options.heatmap:
        target = options.heatmap_class or model_label
        public.heatmap = await asyncio.to_thread(
            heatmap, predictor, prepared.pixels, class_name=target, with_array=options.heatmap_array
        )
    record = record_prediction(
        session,
        public,
        label=model_label,
        key_id=key_id,
        source_format=prepared.decoded.source_format,
        started=started,
    )
    public.prediction_id = record.id
    return public


def heatmap(predictor: Predictor, pixels: np.ndarray, *, class_name: str, with_array: bool) -> Heatmap:
    """Grad-CAM of ``class_name`` over the film at its own size (never stored: it shows pixels)."""
    from pipelines.explain import explain

    explained = explain(predictor, pixels, target_class=class_name)
    cam = np.asarray(explained.cam, dtype=np.float32)
    h, w = cam.shape
    out = Heatmap(
        class_name=explained.class_name,
        png_base64=base64.b64encode(explained.png).decode("ascii"),
        legend_png_base64=base64.b64encode(explained.legend_png).decode("ascii") if explained.legend_png else None,
        width=w,
        height=h,
        scale=dict(explained.scale or DEFAULT_SCALE),
    )
    if with_array:
        out.array_b64 = base64.b64encode(cam.astype("<f2").tobytes()).decode("ascii")
        out.array_shape = [h, w]
    return out


def record_prediction(
    session: Session,
    answer: PredictionPublic,
    *,
    label: str,
    key_id: str,
    source_format: str | None,
    started: float,
    commit: bool = True,
) -> Prediction:
    """Log who asked which model version about which input (hash only) and what the model answered
    (its label even when the answer withheld it)."""
    row = Prediction(
        key_id=key_id,
        model_name=answer.model,
        version=answer.version,
        input_sha256=answer.input_sha256,
        source_format=source_format,
        label=label,
        probabilities=answer.probabilities,
        latency_ms=(time.perf_counter() - started) * 1000,
    )
    session.add(row)
    observe_prediction(answer.model, answer.version, label)
    if commit:
        session.commit()
    else:
        session.flush()
    return row


def list_predictions(session: Session, *, model: str | None, limit: int) -> list[Prediction]:
    query = select(Prediction).order_by(Prediction.created_at.desc()).limit(limit)
    if model:
        query = query.where(Prediction.model_name == model)
    return list(session.scalars(query))


# --------------------------------------------------------------------------- batches

ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")  # a zip's first member, or the end record of an empty zip


def batch_items(files: list[tuple[str, bytes]], *, serving: Serving) -> list[tuple[str, bytes | str]]:
    """(name, bytes) per image, or (name, error message) for a file that can't be read; a zip is opened safely.

    ``files`` are (filename, at most ``max_image_bytes + 1`` bytes) as the routes read them."""
    from pipelines.archive import ArchiveLimits, ArchiveRejected, scan_archive

    limit = serving.max_image_bytes
    if len(files) > serving.batch_max_files:
        raise Invalid(f"{len(files)} files in one batch; the limit is {serving.batch_max_files}")
    items: list[tuple[str, bytes | str]] = []
    for name, data in files:
        if len(data) > limit:
            items.append((name, f"larger than the limit of {limit} bytes"))
        elif data[:4] in ZIP_MAGIC:
            limits = ArchiveLimits(max_files=serving.batch_max_files, max_member_bytes=limit)
            try:
                with tempfile_for(data) as path:
                    entries = scan_archive(path, limits)
                    with zipfile.ZipFile(io.BytesIO(data)) as zf:
                        items.extend((e.name, _read_member(zf, e, limits)) for e in entries)
            except ArchiveRejected as exc:
                items.append((name, f"cannot open the zip: {exc}"))
        else:
            items.append((name, data))
    if len(items) > serving.batch_max_files:
        raise Invalid(f"{len(items)} images in one batch; the limit is {serving.batch_max_files}")
    return items


def _read_member(zf: zipfile.ZipFile, entry: Any, limits: Any) -> bytes | str:
    """One member's bytes, or why it cannot be read: a damaged member fails alone (issue 11/15)."""
    import zlib

    from pipelines.archive import ArchiveRejected, read_entry

    try:
        data = read_entry(zf, entry, limits)
    except ArchiveRejected as exc:
        return str(exc)
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError):
        return "the file is damaged inside the zip"
    except NotImplementedError:  # zipfile's answer to a compression method it cannot read
        return "the file is compressed with a method that cannot be read (use deflate or none)"
    if data[:4] in ZIP_MAGIC:
        return "a zip inside the zip is not opened: put its images in the top-level zip"
    return data


async def predict_batch(
    session: Session,
    resolved: registry.Resolved,
    items: list[tuple[str, bytes | str]],
    *,
    serving: Serving,
    options: Options,
    key_id: str,
) -> BatchPrediction:
    """Predict every readable image (they share micro-batches); a bad file fails alone."""

    async def one(name: str, data: bytes | str) -> BatchItem:
        if isinstance(data, str):
            return BatchItem(file=name, ok=False, error=data)
        started = time.perf_counter()
        try:
            public, label, prepared, _ = await answer(session, resolved, data, serving=serving, options=options)
        except Invalid as exc:
            return BatchItem(file=name, ok=False, error=exc.message)
        public.prediction_id = record_prediction(
            session,
            public,
            label=label,
            key_id=key_id,
            source_format=prepared.decoded.source_format,
            started=started,
            commit=False,
        ).id
        return BatchItem(file=name, ok=True, prediction=public)

    results = await asyncio.gather(*(one(name, data) for name, data in items))
    session.commit()
    row = resolved.row
    return BatchPrediction(model=row.model_name, version=row.version, results=list(results))


@contextmanager
def tempfile_for(data: bytes) -> Iterator[Path]:
    import tempfile

    with tempfile.NamedTemporaryFile(suffix=".zip") as fh:
        fh.write(data)
        fh.flush()
        yield Path(fh.name)
