"""Registration fixes a version's fitness for use from its artifact, and the registry acts on it
(SQLite in-process; the HTTP behaviour is in test_trust.py)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from hilum.db import session_scope
from hilum.migrate import upgrade_to_head
from hilum.registry import artifact_fitness, register_version
from hilum.storage import Storage
from hilum.tables import Dataset, Job, ModelVersion
from models.artifact import ClassifierArtifact
from service.domain import registry
from service.errors import Conflict
from tests.artifacts import tiny_artifact

UNFIT = {"fit_for_use": False, "reasons": ["validation loss never below chance (0.693)"]}


def with_fitness(path: Path, fitness: dict | None) -> Path:
    fields = {f.name for f in dataclasses.fields(ClassifierArtifact)}
    extra: dict = {}
    if fitness is not None:  # the artifact's own field when it has one, else its metadata (older artifacts)
        extra = {"fitness": fitness} if "fitness" in fields else {"metadata": {"fitness": fitness}}
    return tiny_artifact(path, threshold=0.4, seed=None, **extra)


def test_artifact_fitness(tmp_path: Path) -> None:
    assert artifact_fitness(with_fitness(tmp_path / "old.pt", None))[0] is True  # not assessed: served as before
    assert artifact_fitness(with_fitness(tmp_path / "fit.pt", {"fit_for_use": True, "reasons": []})) == (True, [])
    assert artifact_fitness(with_fitness(tmp_path / "unfit.pt", UNFIT)) == (False, UNFIT["reasons"])
    fit, reasons = artifact_fitness(with_fitness(tmp_path / "bare.pt", {"fit_for_use": False}))
    assert fit is False and reasons  # an unfit verdict always carries a reason


@pytest.fixture
def db(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'hilum.db'}"
    upgrade_to_head(url)
    return url


def test_registration_records_fitness_and_the_registry_acts_on_it(db: str, tmp_path: Path) -> None:
    storage = Storage(tmp_path / "data")
    storage.ensure()
    with session_scope(db) as session:
        session.add(Dataset(id="d1", name="d", status="ready"))
        for i, fitness in enumerate(({"fit_for_use": True, "reasons": []}, UNFIT), start=1):
            job = Job(id=f"j{i}", dataset_id="d1", status="running", spec={}, model_name="m")
            session.add(job)
            session.flush()
            path = with_fitness(tmp_path / f"a{i}.pt", fitness)
            register_version(
                session, storage, job, artifact=path, backbone="test_resnet", class_names=[], threshold=0.4, metrics={}
            )
        session.commit()
        rows = {r.version: r for r in session.query(ModelVersion)}
        assert (rows[1].fit_for_use, rows[1].fitness_reasons) == (True, [])
        assert (rows[2].fit_for_use, rows[2].fitness_reasons) == (False, UNFIT["reasons"])

        assert registry.resolve(session, "m").row.version == 1  # the newest fit version, not the newest
        explicit = registry.resolve(session, "m", version=2)
        assert explicit.row.version == 2 and UNFIT["reasons"][0] in explicit.warnings[0]
        with pytest.raises(Conflict, match="never below chance"):
            registry.set_alias(session, "m", "production", 2, actor="k1")
        registry.set_alias(session, "m", "staging", 2, actor="k1")
        assert registry.resolve(session, "m", alias="staging").warnings

        rows[1].fit_for_use, rows[1].fitness_reasons = False, ["every validation film gets the same probability"]
        session.commit()
        with pytest.raises(Conflict, match="no version fit for use.*v1: every validation film"):
            registry.resolve(session, "m")  # the default never falls back to an unfit version
