"""Run one training job: build the splits, call the training pipeline, record the result."""

from __future__ import annotations

import logging
import os
import socket
from pathlib import Path

import torch

from hilum.db import session_scope
from hilum.jobstate import Claim, Heartbeat, JobProgress, claim_job, finish_job
from hilum.metrics import training_observer
from hilum.registry import register_version
from hilum.settings import Settings
from hilum.storage import Storage
from hilum.tables import Dataset, Job, utcnow
from hilum.weights import resolve_weights
from models.artifact import ClassifierArtifact
from pipelines.ingest import image_path, load_manifest
from pipelines.splits import SplitItem, patient_splits
from pipelines.train import TrainData, TrainingCancelled, TrainSpec, train_classifier

log = logging.getLogger(__name__)


def run_training_job(settings: Settings, job_id: str, *, worker: str = "") -> str:
    """Train job ``job_id`` to a registered model version; idempotent by job id.

    Returns the claim outcome; ``Claim.BUSY`` means another live worker holds the job.
    """
    url = settings.resolved_database_url
    storage = Storage(settings.data_dir)
    me = f"{worker or socket.gethostname()}:{os.getpid()}"
    claim = claim_job(
        url,
        job_id,
        worker=me,
        lease_s=settings.job_lease_s,
        max_attempts=settings.job_max_attempts,
    )
    if claim != Claim.TAKEN:
        log.info("job %s: %s", job_id, claim)
        return claim
    with session_scope(url) as session:
        job = session.get(Job, job_id)
        assert job is not None
        spec = TrainSpec.from_dict(job.spec)
        dataset = session.get(Dataset, job.dataset_id)
        assert dataset is not None
        weights_ref, model_name = job.weights, job.model_name
        dataset_meta = {"dataset_id": dataset.id, "dataset_name": dataset.name, "job_id": job.id}
        # The canonical images were bounded at ingestion; the artifact records that bound for serving.
        max_side = int((dataset.report or {}).get("max_side") or settings.max_image_side)

    progress = JobProgress(url, job_id, interval_s=settings.progress_interval_s)
    try:
        with Heartbeat(url, job_id, every_s=settings.job_lease_s / 4, worker=me):
            weights = resolve_weights(settings, weights_ref)
            data = build_train_data(storage, dataset_meta["dataset_id"], seed=spec.seed)
            result = train_classifier(
                spec,
                data,
                storage.job_dir(job_id),
                weights=weights,
                on_progress=training_observer(progress, backbone=spec.backbone),
                should_stop=progress.should_stop,
                extra_metadata={**dataset_meta, "model_name": model_name},
                max_side=max_side,
            )
    except TrainingCancelled:
        finish_job(url, job_id, "cancelled")
        return Claim.DONE
    except Exception as exc:
        log.exception("job %s failed", job_id)
        finish_job(url, job_id, "failed", error=describe_failure(exc, spec))
        return Claim.DONE

    with session_scope(url) as session:
        job = session.get(Job, job_id, with_for_update=True)  # a row lock on PostgreSQL; SQLite serialises writes
        assert job is not None
        if job.status != "running" or job.worker != me or job.cancel_requested:
            # Cancelled, or taken over by another worker while this one stalled: its result is not ours to record.
            log.warning(
                "job %s: not registering (status %s, held by %s, cancel requested %s)",
                job_id,
                job.status,
                job.worker,
                job.cancel_requested,
            )
            if job.status == "running" and job.worker == me:
                job.status, job.finished_at = "cancelled", utcnow()
            return Claim.DONE
        artifact = ClassifierArtifact.load(result.artifact_path)
        metrics = {"val": result.val_metrics, "test": result.test_metrics, "best_epoch": result.best_epoch}
        register_version(
            session,
            storage,
            job,
            artifact=result.artifact_path,
            backbone=spec.backbone,
            class_names=list(artifact.class_names),
            threshold=artifact.threshold,
            metrics=metrics,
        )
        job.metrics = metrics
        job.status, job.finished_at = "succeeded", utcnow()
    return Claim.DONE


def build_train_data(storage: Storage, dataset_id: str, *, seed: int) -> TrainData:
    """Patient-level stratified splits of a ready dataset, as paths and label indices."""
    dataset_dir = storage.dataset_dir(dataset_id)
    rows = load_manifest(dataset_dir)
    class_names = sorted({r.label for r in rows})
    index = {name: i for i, name in enumerate(class_names)}
    splits = patient_splits([SplitItem(r.sample_id, r.label, r.patient_key) for r in rows], seed=seed)

    def as_pairs(items: list[SplitItem]) -> list[tuple[Path, int]]:
        return [(image_path(dataset_dir, i.sample_id), index[i.label]) for i in items]

    return TrainData(
        class_names=class_names,
        train=as_pairs(splits["train"]),
        val=as_pairs(splits["val"]),
        test=as_pairs(splits["test"]),
    )


def describe_failure(exc: Exception, spec: TrainSpec) -> str:
    """The job's error message: what went wrong, and for known causes what to change."""
    if isinstance(exc, torch.cuda.OutOfMemoryError):
        return (
            f"CUDA out of memory at batch_size={spec.batch_size}, image_size={spec.image_size} "
            f"({spec.backbone}); submit again with a smaller batch_size or image_size"
        )
    return f"{type(exc).__name__}: {exc}"
