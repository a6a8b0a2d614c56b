"""Run one training job: claim it, load its spec, call the training pipeline, record the result."""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass

import torch

from hilum.db import session_scope
from hilum.jobstate import Claim, Heartbeat, JobProgress, claim_job, finish_job, record_training_result
from hilum.metrics import training_observer
from hilum.registry import warm_start_source
from hilum.settings import Settings
from hilum.storage import Storage
from hilum.sweeps import cancel_if_overdue, finish_member
from hilum.tables import Dataset, Job
from hilum.weights import resolve_weights
from pipelines.dataset import DatasetVersion
from pipelines.train import InitState, TrainingCancelled, TrainSpec, load_init_state, train_classifier

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class JobInputs:
    """What the worker reads from the job row before training (the session is closed while it trains)."""

    job_id: str
    spec: TrainSpec
    dataset_id: str
    weights_ref: str
    model_name: str
    metadata: dict
    init_from: dict | None = None  # warm start: the job's init_from plus the version's artifact_path


def load_job_inputs(url: str, job_id: str) -> JobInputs:
    with session_scope(url) as session:
        job = session.get(Job, job_id)
        assert job is not None
        dataset = session.get(Dataset, job.dataset_id)
        assert dataset is not None
        return JobInputs(
            job_id=job.id,
            spec=TrainSpec.from_dict(job.spec),
            dataset_id=dataset.id,
            weights_ref=job.weights,
            model_name=job.model_name,
            metadata={"dataset_id": dataset.id, "dataset_name": dataset.name, "job_id": job.id},
            init_from=warm_start_source(session, job.init_from),
        )


def run_training_job(settings: Settings, job_id: str, *, worker: str = "") -> str:
    """Train job ``job_id`` to a registered model version; idempotent by job id.

    Returns the claim outcome; ``Claim.BUSY`` means another live worker holds the job.
    """
    url = settings.resolved_database_url
    storage = Storage(settings.data_dir)
    me = f"{worker or socket.gethostname()}:{os.getpid()}"
    if cancel_if_overdue(url, storage, job_id):  # a sweep member not started within its sweep's max_minutes
        return Claim.DONE
    claim = claim_job(url, job_id, worker=me, lease_s=settings.job_lease_s, max_attempts=settings.job_max_attempts)
    if claim != Claim.TAKEN:
        log.info("job %s: %s", job_id, claim)
        finish_member(url, storage, job_id)  # the claim may have ended it (cancelled, out of attempts)
        return claim
    inputs = load_job_inputs(url, job_id)
    spec = inputs.spec
    progress = JobProgress(url, job_id, interval_s=settings.progress_interval_s)
    try:
        with Heartbeat(url, job_id, every_s=settings.job_lease_s / 4, worker=me):
            version = DatasetVersion(storage.dataset_dir(inputs.dataset_id))
            data = version.train_data(seed=spec.seed)
            init_state = warm_start(storage, inputs.init_from, data.class_names)
            result = train_classifier(
                spec,
                data,
                storage.job_dir(job_id),
                weights="none" if init_state else resolve_weights(settings, inputs.weights_ref),
                init_state=init_state,
                on_progress=training_observer(progress, backbone=spec.backbone),
                should_stop=progress.should_stop,
                extra_metadata={**inputs.metadata, "model_name": inputs.model_name},
                # The canonical images were bounded at ingestion; the artifact records that bound for serving.
                max_side=version.max_side() or settings.max_image_side,
            )
    except TrainingCancelled:
        finish_job(url, job_id, "cancelled")
        finish_member(url, storage, job_id)
        return Claim.DONE
    except Exception as exc:
        log.exception("job %s failed", job_id)
        finish_job(url, job_id, "failed", error=describe_failure(exc, spec))
        finish_member(url, storage, job_id)
        return Claim.DONE
    metrics = {"val": result.val_metrics, "test": result.test_metrics, "best_epoch": result.best_epoch}
    record_training_result(url, storage, job_id, worker=me, artifact_path=result.artifact_path, metrics=metrics)
    finish_member(url, storage, job_id)  # a sweep's last member ends the sweep (hilum/sweeps.py)
    return Claim.DONE


def warm_start(storage: Storage, init_from: dict | None, class_names: list[str]) -> InitState | None:
    """The registered version a job starts from, its head rows mapped to the dataset's classes."""
    if not init_from:
        return None
    return load_init_state(
        storage.resolve(init_from["artifact_path"]),
        class_names,
        model_name=init_from["model"],
        version=int(init_from["version"]),
        class_map=init_from.get("class_map"),
    )


def describe_failure(exc: Exception, spec: TrainSpec) -> str:
    """The job's error message: what went wrong, and for known causes what to change."""
    if isinstance(exc, torch.cuda.OutOfMemoryError):
        return (
            f"CUDA out of memory at batch_size={spec.batch_size}, image_size={spec.image_size} "
            f"({spec.backbone}); submit again with a smaller batch_size or image_size"
        )
    return f"{type(exc).__name__}: {exc}"
