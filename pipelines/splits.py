"""Patient-level, stratified, seeded splits: no patient appears in two splits."""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class SplitItem:
    sample_id: str
    label: str
    patient_key: str


def patient_splits(
    items: Sequence[SplitItem],
    *,
    fractions: tuple[float, float, float] = (0.7, 0.15, 0.15),
    seed: int = 0,
) -> dict[str, list[SplitItem]]:
    """Assign whole patients to train/val/test, stratified by each patient's majority label.

    Within each stratum patients are shuffled with ``seed`` and dealt out so every split
    gets its share of images; val and test get at least one patient of every stratum
    that has three or more patients, so their metrics exist.
    """
    if abs(sum(fractions) - 1.0) > 1e-6:
        raise ValueError("split fractions must sum to 1")
    by_patient: dict[str, list[SplitItem]] = defaultdict(list)
    for item in items:
        by_patient[item.patient_key].append(item)
    strata: dict[str, list[str]] = defaultdict(list)
    for patient, patient_items in sorted(by_patient.items()):
        majority = Counter(i.label for i in patient_items).most_common(1)[0][0]
        strata[majority].append(patient)

    rng = random.Random(seed)
    out: dict[str, list[SplitItem]] = {name: [] for name in SPLITS}
    for label in sorted(strata):
        patients = strata[label]
        rng.shuffle(patients)
        total = sum(len(by_patient[p]) for p in patients)
        targets = [f * total for f in fractions]
        filled = [0, 0, 0]
        order = _deal_order(len(patients))
        for i, patient in enumerate(patients):
            if i < len(order):
                split = order[i]
            else:  # the split furthest below its target share
                split = max(range(3), key=lambda s: targets[s] - filled[s])
            out[SPLITS[split]].extend(by_patient[patient])
            filled[split] += len(by_patient[patient])
    return out


def _deal_order(n_patients: int) -> list[int]:
    """The first patients of a stratum: one each to test and val when there are enough."""
    if n_patients >= 3:
        return [2, 1]
    return [0] * n_patients


# Films of every class each half of validation must get before a calibration split is carved: the threshold's
# one-sided 95% bound on sensitivity can reach 0.95 only from 59 positives up (pipelines/training/calibration.py),
# and a temperature or conformal quantile fitted on fewer is noise.
CAL_MIN_PER_CLASS = 60


def carve_calibration(
    val: Sequence[SplitItem], *, seed: int = 0, min_per_class: int = CAL_MIN_PER_CLASS
) -> tuple[list[SplitItem], list[SplitItem]]:
    """Split validation into (model selection, calibration), whole patients each, stratified by label.

    The validation split picks the best epoch, so its scores flatter the model; a conformal quantile, a
    temperature or a threshold fitted on those same films is biased (coverage fell to 0.865 for a nominal
    0.90). When validation holds at least ``2 * min_per_class`` films of every class, half of its patients
    (by films, per stratum) become a calibration split used for nothing else. Otherwise validation is
    returned whole with an empty calibration split: halving it would leave the threshold too few positives.
    """
    counts = Counter(i.label for i in val)
    if not counts or min(counts.values()) < 2 * min_per_class:
        return list(val), []
    by_patient: dict[str, list[SplitItem]] = defaultdict(list)
    for item in val:
        by_patient[item.patient_key].append(item)
    strata: dict[str, list[str]] = defaultdict(list)
    for patient, patient_items in sorted(by_patient.items()):
        strata[Counter(i.label for i in patient_items).most_common(1)[0][0]].append(patient)
    rng = random.Random(seed * 7_919 + 1)
    select: list[SplitItem] = []
    calibration: list[SplitItem] = []
    for label in sorted(strata):
        patients = strata[label]
        rng.shuffle(patients)
        for patient in patients:  # the half with fewer films so far gets the next patient
            target = calibration if len(calibration) < len(select) else select
            target.extend(by_patient[patient])
    return select, calibration
