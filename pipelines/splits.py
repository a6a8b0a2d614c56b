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
