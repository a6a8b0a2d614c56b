"""The model registry: versions, aliases, operating thresholds and fitness for use (no FastAPI types here).

A registered version is immutable: its artifact is never rewritten. What may change is recorded beside it:
which version an alias points at (``alias_events``) and the operating threshold predictions use
(``model_versions.threshold``, every change in ``threshold_events`` with who, when, old, new and why).
A version registered as unfit for use never takes the ``production`` alias and is never the default.
"""

from __future__ import annotations

import json
import math
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from hilum.audit import record_audit
from hilum.storage import Storage
from hilum.tables import AliasEvent, ModelAlias, ModelVersion, ThresholdEvent, utcnow
from models.artifact import ClassifierArtifact
from service.errors import Conflict, Invalid, NotFound
from service.schemas.models import ModelPublic, ModelVersionPublic, OperatingPoint

DEFAULT_ALIAS = "production"
ALIAS_PATTERN = re.compile(r"^[a-z][a-z0-9_-]{0,63}$")
# Names that are path segments of the alias routes, so never aliases.
RESERVED_ALIASES = frozenset({"history"})
Z95 = 1.959963984540054


@dataclass
class Resolved:
    """The version that answers, and what the caller must be told about the choice."""

    row: ModelVersion
    warnings: list[str] = field(default_factory=list)


def unfit_warning(row: ModelVersion) -> str:
    reasons = "; ".join(row.fitness_reasons or []) or "no reason recorded"
    return f"version {row.version} of '{row.model_name}' is not fit for use ({reasons}): do not act on this answer"


# --------------------------------------------------------------------------- versions


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


def require_model(session: Session, name: str) -> None:
    """Raise NotFound unless ``name`` has at least one version."""
    if session.scalar(select(ModelVersion.id).where(ModelVersion.model_name == name).limit(1)) is None:
        raise NotFound(f"model '{name}' not found")


def get_version(session: Session, name: str, version: int) -> ModelVersion:
    row = session.scalar(select(ModelVersion).where(ModelVersion.model_name == name, ModelVersion.version == version))
    if row is None:
        require_model(session, name)
        raise NotFound(f"model '{name}' has no version {version}")
    return row


def resolve(session: Session, name: str, *, version: int | None = None, alias: str | None = None) -> Resolved:
    """The version that answers: a named version or alias (an unfit one answers with a warning); by
    default the ``production`` alias, or the newest version fit for use while no ``production`` alias exists."""
    if version is not None and alias is not None:
        raise Invalid(f"give either version ({version}) or alias ('{alias}'), not both")
    if version is not None:
        return _with_fitness_warning(get_version(session, name, version))
    target = session.get(ModelAlias, (name, alias or DEFAULT_ALIAS))
    if target is not None:
        row = session.scalar(
            select(ModelVersion).where(ModelVersion.model_name == name, ModelVersion.version == target.version)
        )
        if row is None:
            raise NotFound(
                f"alias '{target.alias}' of model '{name}' points at version {target.version}, which is gone"
            )
        return _with_fitness_warning(row)
    if alias is not None:
        require_model(session, name)
        raise NotFound(f"model '{name}' has no alias '{alias}'")
    return Resolved(_newest_fit(session, name))


def _with_fitness_warning(row: ModelVersion) -> Resolved:
    return Resolved(row, [] if row.fit_for_use else [unfit_warning(row)])


def _newest_fit(session: Session, name: str) -> ModelVersion:
    rows = list(
        session.scalars(
            select(ModelVersion).where(ModelVersion.model_name == name).order_by(ModelVersion.version.desc())
        )
    )
    if not rows:
        raise NotFound(f"model '{name}' not found")
    for row in rows:
        if row.fit_for_use:
            return row
    unfit = "; ".join(f"v{r.version}: {', '.join(r.fitness_reasons or []) or 'no reason recorded'}" for r in rows)
    raise Conflict(
        f"model '{name}' has no version fit for use ({unfit}); ask for a version explicitly to see its answer "
        "with a warning"
    )


def resolve_version(
    session: Session, name: str, *, version: int | None = None, alias: str | None = None
) -> ModelVersion:
    """``resolve`` without the warnings, for downloads and cards."""
    return resolve(session, name, version=version, alias=alias).row


# --------------------------------------------------------------------------- aliases


def set_alias(session: Session, name: str, alias: str, version: int, *, actor: str) -> ModelAlias:
    """Point ``alias`` at ``version`` (recorded with who, when, and from which version).

    ``production`` never points at a version registered as unfit for use (Conflict naming the reason)."""
    if not ALIAS_PATTERN.match(alias):
        raise Invalid(f"alias '{alias}' is not valid: lowercase letters, digits, '-' and '_', 64 at most")
    if alias in RESERVED_ALIASES:
        raise Invalid(f"alias '{alias}' is reserved; choose another name")
    row = get_version(session, name, version)
    if alias == DEFAULT_ALIAS and not row.fit_for_use:
        reasons = "; ".join(row.fitness_reasons or []) or "no reason recorded"
        raise Conflict(f"version {version} of '{name}' is not fit for use ({reasons}); it cannot be '{alias}'")
    for _ in range(3):
        try:
            return _move_alias(session, name, alias, version, actor=actor)
        except IntegrityError:  # a concurrent request created the alias first: it exists now, so move it
            session.rollback()
    raise Conflict(f"alias '{alias}' of model '{name}' is being changed by other requests; try again")


def _move_alias(session: Session, name: str, alias: str, version: int, *, actor: str) -> ModelAlias:
    # Write before reading: the row lock (PostgreSQL) or the database write lock (SQLite) is taken first,
    # so concurrent moves of one alias run one after another and each event names the version it left.
    # FOR UPDATE too: a row created by another request after our UPDATE matched nothing is locked (and read
    # as committed) before we read the version it points at.
    session.execute(
        update(ModelAlias).where(ModelAlias.model_name == name, ModelAlias.alias == alias).values(updated_by=actor)
    )
    row = session.get(ModelAlias, (name, alias), populate_existing=True, with_for_update=True)
    previous = row.version if row else None
    if row is None:
        row = ModelAlias(model_name=name, alias=alias, version=version, updated_by=actor)
        session.add(row)
    else:
        row.version, row.updated_by, row.updated_at = version, actor, utcnow()
    session.add(AliasEvent(model_name=name, alias=alias, from_version=previous, to_version=version, actor=actor))
    record_audit(
        session,
        actor=actor,
        action="alias.move",
        target=f"{name}/{alias}",
        details={"from_version": previous, "to_version": version},
    )
    session.commit()
    return row


def alias_history(session: Session, name: str) -> list[AliasEvent]:
    return list(session.scalars(select(AliasEvent).where(AliasEvent.model_name == name).order_by(AliasEvent.id)))


# --------------------------------------------------------------------------- operating threshold


def set_threshold(session: Session, row: ModelVersion, threshold: float, *, reason: str, actor: str) -> None:
    """Change the version's effective operating threshold, recorded (who, when, old, new, why).

    The artifact keeps the threshold training chose; every prediction uses this one."""
    if len(row.class_names or []) != 2:
        raise Invalid(f"version {row.version} of '{row.model_name}' is not a two-class model: it has no threshold")
    reason = reason.strip()
    if len(reason) < 3:
        raise Invalid("say why the threshold changes (reason, 3 characters at least)")
    # Lock the row first (PostgreSQL; SQLite takes its write lock), so concurrent changes each see the one before.
    session.execute(update(ModelVersion).where(ModelVersion.id == row.id).values(threshold=ModelVersion.threshold))
    session.refresh(row)
    old = row.threshold
    row.threshold = float(threshold)
    session.add(
        ThresholdEvent(
            model_name=row.model_name,
            version=row.version,
            old_threshold=old,
            new_threshold=float(threshold),
            reason=reason,
            actor=actor,
        )
    )
    record_audit(
        session,
        actor=actor,
        action="threshold.change",
        target=f"{row.model_name}/{row.version}",
        details={"old": old, "new": float(threshold), "reason": reason},
    )
    session.commit()


def threshold_history(session: Session, name: str, version: int | None = None) -> list[ThresholdEvent]:
    query = select(ThresholdEvent).where(ThresholdEvent.model_name == name)
    if version is not None:
        query = query.where(ThresholdEvent.version == version)
    return list(session.scalars(query.order_by(ThresholdEvent.id)))


def last_threshold_change(session: Session, row: ModelVersion) -> ThresholdEvent | None:
    return session.scalar(
        select(ThresholdEvent)
        .where(ThresholdEvent.model_name == row.model_name, ThresholdEvent.version == row.version)
        .order_by(ThresholdEvent.id.desc())
        .limit(1)
    )


def operating_point(
    session: Session, row: ModelVersion, artifact: ClassifierArtifact, *, storage: Storage | None = None
) -> tuple[OperatingPoint | None, list[str]]:
    """The effective operating point: the registry's threshold with its validation sensitivity and
    specificity; after a change, recomputed from the stored validation predictions when there are some."""
    stored = dict(artifact.operating_point or {})
    trained_threshold = artifact.threshold
    threshold = row.threshold if row.threshold is not None else trained_threshold
    if threshold is None:
        return None, []
    warnings: list[str] = []
    figures = {k: v for k, v in stored.items() if k in OperatingPoint.model_fields}
    if trained_threshold is None or not math.isclose(threshold, trained_threshold, abs_tol=1e-12):
        scores = _cached_scores(row.id, artifact, storage.job_dir(row.job_id) if storage and row.job_id else None)
        if scores is not None:
            figures = operating_point_at(float(threshold), *scores)
            figures["rule"] = "changed by staff; figures recomputed on the validation predictions"
        else:
            figures = {"rule": "changed by staff"}
            warnings.append(
                f"the operating threshold was changed to {threshold:g}; validation sensitivity and specificity "
                "at it are unknown (the version stores no validation predictions)"
            )
        event = last_threshold_change(session, row)
        if event is not None:
            figures["changed_by"], figures["changed_at"] = event.actor, event.created_at
    figures["threshold"] = float(threshold)
    return OperatingPoint.model_validate(figures), warnings


_SCORES: dict[str, tuple[list[float], list[bool]] | None] = {}


def _cached_scores(
    version_id: str, artifact: ClassifierArtifact, job_dir: Path | None
) -> tuple[list[float], list[bool]] | None:
    """``validation_scores`` read once per version (the artifact and the job's report never change)."""
    if version_id not in _SCORES:
        if len(_SCORES) >= 256:
            _SCORES.clear()
        _SCORES[version_id] = validation_scores(artifact, job_dir)
    return _SCORES[version_id]


def validation_scores(artifact: ClassifierArtifact, job_dir: Path | None) -> tuple[list[float], list[bool]] | None:
    """(positive-class probabilities, is positive) on the validation split, from the artifact or the job's
    report, or None when neither stores them."""
    sources: list[Any] = [artifact.val_predictions]
    report = job_dir / "report" / "report.json" if job_dir else None
    if report is not None and report.is_file():  # an artifact older than the field: the job's report may have them
        sources.append(json.loads(report.read_text()).get("val_predictions"))
    positive, names = artifact.positive_class, list(artifact.class_names)
    for source in sources:
        if isinstance(source, dict):
            parsed = _parse_scores(source, names.index(positive) if positive in names else None)
            if parsed is not None:
                return parsed
    return None


def _parse_scores(source: dict, positive_index: int | None) -> tuple[list[float], list[bool]] | None:
    scores = source.get("p_pos") or source.get("scores")
    truth = source.get("is_pos")
    if truth is None and source.get("labels") is not None and positive_index is not None:
        truth = [int(y) == positive_index for y in source["labels"]]
    if scores is None and source.get("probs") is not None and positive_index is not None:
        scores = [p[positive_index] for p in source["probs"]]
    if not scores or truth is None or len(scores) != len(truth):
        return None
    return [float(s) for s in scores], [bool(t) for t in truth]


def operating_point_at(threshold: float, scores: list[float], is_pos: list[bool]) -> dict[str, Any]:
    """Sensitivity and specificity at ``threshold`` (positive when score >= threshold), Wilson 95% intervals."""
    tp = sum(1 for s, y in zip(scores, is_pos, strict=True) if y and s >= threshold)
    tn = sum(1 for s, y in zip(scores, is_pos, strict=True) if not y and s < threshold)
    n_pos = sum(is_pos)
    n_neg = len(is_pos) - n_pos
    sens, sens_ci = _proportion(tp, n_pos)
    spec, spec_ci = _proportion(tn, n_neg)
    return {
        "sensitivity": sens,
        "sensitivity_ci95": sens_ci,
        "specificity": spec,
        "specificity_ci95": spec_ci,
        "n_pos": n_pos,
        "n_neg": n_neg,
    }


def _proportion(k: int, n: int) -> tuple[float | None, list[float] | None]:
    """k / n with its Wilson score 95% interval."""
    if n == 0:
        return None, None
    p = k / n
    z2 = Z95 * Z95
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = Z95 * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return p, [max(0.0, centre - half), min(1.0, centre + half)]
