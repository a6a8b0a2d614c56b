"""Registered models: versions, aliases, predictions."""

from __future__ import annotations

import hashlib
import re
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from fastapi import UploadFile
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from hilum.settings import Settings
from hilum.storage import Storage
from hilum.tables import AliasEvent, ModelAlias, ModelVersion, Prediction, utcnow
from pipelines.imaging import DecodedImage, ImageRejected, chest_xray_problem, decode_image
from service.batcher import MicroBatcher
from service.errors import Conflict, Invalid, NotFound, TooLarge
from service.model_cache import ModelCache
from service.schemas.models import BatchItem, BatchPrediction, ModelPublic, ModelVersionPublic, PredictionPublic

DEFAULT_ALIAS = "production"
ALIAS_PATTERN = re.compile(r"^[a-z][a-z0-9_-]{0,63}$")
# Names that are path segments of the alias routes, so never aliases.
RESERVED_ALIASES = frozenset({"history"})


def list_models(session: Session) -> list[ModelPublic]:
    grouped: dict[str, list[ModelVersion]] = defaultdict(list)
    for row in session.scalars(select(ModelVersion).order_by(ModelVersion.model_name, ModelVersion.version)):
        grouped[row.model_name].append(row)
    return [_model_public(session, name, rows) for name, rows in grouped.items()]


def get_model(session: Session, name: str) -> ModelPublic:
    rows = list(
        session.scalars(select(ModelVersion).where(ModelVersion.model_name == name).order_by(ModelVersion.version))
    )
    if not rows:
        raise NotFound(f"model '{name}' not found")
    return _model_public(session, name, rows)


def _model_public(session: Session, name: str, rows: list[ModelVersion]) -> ModelPublic:
    aliases = session.scalars(select(ModelAlias).where(ModelAlias.model_name == name))
    return ModelPublic(
        name=name,
        latest_version=rows[-1].version,
        aliases={a.alias: a.version for a in aliases},
        versions=[ModelVersionPublic.model_validate(r) for r in rows],
    )


def resolve_version(
    session: Session, name: str, *, version: int | None = None, alias: str | None = None
) -> ModelVersion:
    """A named version, or the version an alias points at; by default the ``production`` alias,
    or the newest version while no ``production`` alias exists."""
    if version is not None and alias is not None:
        raise Invalid(f"give either version ({version}) or alias ('{alias}'), not both")
    query = select(ModelVersion).where(ModelVersion.model_name == name)
    if version is not None:
        row = session.scalar(query.where(ModelVersion.version == version))
        if row is None:
            require_model(session, name)
            raise NotFound(f"model '{name}' has no version {version}")
        return row
    target = session.get(ModelAlias, (name, alias or DEFAULT_ALIAS))
    if target is not None:
        row = session.scalar(query.where(ModelVersion.version == target.version))
        if row is None:
            raise NotFound(
                f"alias '{target.alias}' of model '{name}' points at version {target.version}, which is gone"
            )
        return row
    if alias is not None:
        require_model(session, name)
        raise NotFound(f"model '{name}' has no alias '{alias}'")
    row = session.scalar(query.order_by(ModelVersion.version.desc()).limit(1))
    if row is None:
        raise NotFound(f"model '{name}' not found")
    return row


def require_model(session: Session, name: str) -> None:
    """Raise NotFound unless ``name`` has at least one version."""
    if session.scalar(select(ModelVersion.id).where(ModelVersion.model_name == name).limit(1)) is None:
        raise NotFound(f"model '{name}' not found")


def set_alias(session: Session, name: str, alias: str, version: int, *, actor: str) -> ModelAlias:
    """Point ``alias`` at ``version`` (recorded with who, when, and from which version)."""
    if not ALIAS_PATTERN.match(alias):
        raise Invalid(f"alias '{alias}' is not valid: lowercase letters, digits, '-' and '_', 64 at most")
    if alias in RESERVED_ALIASES:
        raise Invalid(f"alias '{alias}' is reserved; choose another name")
    resolve_version(session, name, version=version)
    for _ in range(3):
        try:
            return _move_alias(session, name, alias, version, actor=actor)
        except IntegrityError:  # a concurrent request created the alias first: it exists now, so move it
            session.rollback()
    raise Conflict(f"alias '{alias}' of model '{name}' is being changed by other requests; try again")


def _move_alias(session: Session, name: str, alias: str, version: int, *, actor: str) -> ModelAlias:
    # Write before reading: the row lock (PostgreSQL) or the database write lock (SQLite) is taken first,
    # so concurrent moves of one alias run one after another and each event names the version it left.
    session.execute(
        update(ModelAlias).where(ModelAlias.model_name == name, ModelAlias.alias == alias).values(updated_by=actor)
    )
    row = session.get(ModelAlias, (name, alias), populate_existing=True)
    previous = row.version if row else None
    if row is None:
        row = ModelAlias(model_name=name, alias=alias, version=version, updated_by=actor)
        session.add(row)
    else:
        row.version, row.updated_by, row.updated_at = version, actor, utcnow()
    session.add(AliasEvent(model_name=name, alias=alias, from_version=previous, to_version=version, actor=actor))
    session.commit()
    return row


def alias_history(session: Session, name: str) -> list[AliasEvent]:
    return list(session.scalars(select(AliasEvent).where(AliasEvent.model_name == name).order_by(AliasEvent.id)))


def decode_upload(data: bytes, *, max_side: int) -> DecodedImage:
    """Decode an uploaded image, refusing files the models were not made for (``chest_xray_problem``)."""
    try:
        decoded = decode_image(data, max_side=max_side)
    except ImageRejected as exc:
        raise Invalid(f"cannot use this file: {exc}") from exc
    problem = chest_xray_problem(decoded.dicom)
    if problem:
        raise Invalid(f"cannot use this file: {problem}")
    return decoded


async def predict(
    row: ModelVersion,
    data: bytes,
    *,
    storage: Storage,
    cache: ModelCache,
    batcher: MicroBatcher,
    max_side: int,
) -> tuple[PredictionPublic, DecodedImage]:
    """Decode with the training preprocessing, run the cached model (micro-batched), shape the answer."""
    from fastapi.concurrency import run_in_threadpool

    decoded = await run_in_threadpool(decode_upload, data, max_side=max_side)
    predictor = await run_in_threadpool(cache.get, row.id, storage.resolve(row.artifact_path))
    result = await batcher.predict(row.id, predictor.predict, decoded.pixels)
    answer = PredictionPublic(
        model=row.model_name,
        version=row.version,
        label=result.label,
        probabilities=result.probabilities,
        positive_class=result.positive_class,
        threshold=result.threshold,
        operating_point=getattr(predictor.artifact, "operating_point", None) or None,
        input_sha256=hashlib.sha256(data).hexdigest(),
    )
    return answer, decoded


async def read_upload(upload: UploadFile, *, max_bytes: int) -> bytes:
    """The uploaded file's bytes; TooLarge past ``max_bytes`` (never reads more than one byte beyond)."""
    data = await upload.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise TooLarge(f"image is larger than the limit of {max_bytes} bytes")
    return data


async def predict_and_record(
    session: Session,
    row: ModelVersion,
    data: bytes,
    *,
    storage: Storage,
    cache: ModelCache,
    batcher: MicroBatcher,
    max_side: int,
    key_id: str,
    with_heatmap: bool,
    started: float,
) -> PredictionPublic:
    """One prediction (with its Grad-CAM overlay when asked), logged against the caller's key."""
    from fastapi.concurrency import run_in_threadpool

    answer, decoded = await predict(row, data, storage=storage, cache=cache, batcher=batcher, max_side=max_side)
    if with_heatmap:
        answer.heatmap_png = await run_in_threadpool(
            heatmap, row, decoded, storage=storage, cache=cache, label=answer.label
        )
    record = record_prediction(session, answer, key_id=key_id, source_format=decoded.source_format, started=started)
    answer.prediction_id = record.id
    return answer


def record_prediction(
    session: Session,
    answer: PredictionPublic,
    *,
    key_id: str,
    source_format: str | None,
    started: float,
    commit: bool = True,
) -> Prediction:
    """Log who asked which model version about which input (hash only) and what it answered."""
    row = Prediction(
        key_id=key_id,
        model_name=answer.model,
        version=answer.version,
        input_sha256=answer.input_sha256,
        source_format=source_format,
        label=answer.label,
        probabilities=answer.probabilities,
        latency_ms=(time.perf_counter() - started) * 1000,
    )
    session.add(row)
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


def heatmap(row: ModelVersion, decoded: DecodedImage, *, storage: Storage, cache: ModelCache, label: str) -> str:
    """Grad-CAM of the answered label over the image, as a base64 PNG (never stored: it shows pixels)."""
    import base64

    from pipelines.explain import explain

    predictor = cache.get(row.id, storage.resolve(row.artifact_path))
    target = list(predictor.artifact.class_names).index(label)
    _, png = explain(predictor, decoded.pixels, target_class=target)
    return base64.b64encode(png).decode("ascii")


async def read_batch_items(files: list[UploadFile], *, settings: Settings) -> list[tuple[str, bytes | str]]:
    """(name, bytes) per image, or (name, error message) for a file that can't be read; a zip is opened safely."""
    import io
    import zipfile

    from pipelines.archive import ArchiveLimits, ArchiveRejected, read_entry, scan_archive

    if len(files) > settings.batch_max_files:
        raise Invalid(f"{len(files)} files in one batch; the limit is {settings.batch_max_files}")
    items: list[tuple[str, bytes | str]] = []
    for upload in files:
        data = await upload.read(settings.max_image_bytes + 1)
        name = upload.filename or "file"
        if len(data) > settings.max_image_bytes:
            items.append((name, f"larger than the limit of {settings.max_image_bytes} bytes"))
        elif data[:4] == b"PK\x03\x04":
            limits = ArchiveLimits(max_files=settings.batch_max_files, max_member_bytes=settings.max_image_bytes)
            try:
                with tempfile_for(data) as path:
                    entries = scan_archive(path, limits)
                    with zipfile.ZipFile(io.BytesIO(data)) as zf:
                        items.extend((e.name, read_entry(zf, e, limits)) for e in entries)
            except ArchiveRejected as exc:
                items.append((name, f"cannot open the zip: {exc}"))
        else:
            items.append((name, data))
    if len(items) > settings.batch_max_files:
        raise Invalid(f"{len(items)} images in one batch; the limit is {settings.batch_max_files}")
    return items


async def predict_batch(
    session: Session,
    row: ModelVersion,
    items: list[tuple[str, bytes | str]],
    *,
    storage: Storage,
    cache: ModelCache,
    batcher: MicroBatcher,
    max_side: int,
    key_id: str,
) -> BatchPrediction:
    """Predict every readable image (they share micro-batches); a bad file fails alone."""
    import asyncio

    async def one(name: str, data: bytes | str) -> BatchItem:
        if isinstance(data, str):
            return BatchItem(file=name, ok=False, error=data)
        started = time.perf_counter()
        try:
            answer, decoded = await predict(row, data, storage=storage, cache=cache, batcher=batcher, max_side=max_side)
        except Invalid as exc:
            return BatchItem(file=name, ok=False, error=exc.message)
        answer.prediction_id = record_prediction(
            session, answer, key_id=key_id, source_format=decoded.source_format, started=started, commit=False
        ).id
        return BatchItem(file=name, ok=True, prediction=answer)

    results = await asyncio.gather(*(one(name, data) for name, data in items))
    session.commit()
    return BatchPrediction(model=row.model_name, version=row.version, results=list(results))


@contextmanager
def tempfile_for(data: bytes) -> Iterator[Path]:
    import tempfile

    with tempfile.NamedTemporaryFile(suffix=".zip") as fh:
        fh.write(data)
        fh.flush()
        yield Path(fh.name)
