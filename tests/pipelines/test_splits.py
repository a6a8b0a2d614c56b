from __future__ import annotations

import pytest

from pipelines.splits import SplitItem, patient_splits


def make_items(n_patients: int, per_patient: int, labels: tuple[str, ...] = ("NORMAL", "PNEUMONIA")):
    return [
        SplitItem(f"s{p}-{i}", labels[p % len(labels)], f"patient{p}")
        for p in range(n_patients)
        for i in range(per_patient)
    ]


@pytest.mark.parametrize(("n_patients", "per_patient"), [(60, 1), (30, 4), (9, 3), (200, 2)])
def test_no_patient_in_two_splits(n_patients: int, per_patient: int) -> None:
    splits = patient_splits(make_items(n_patients, per_patient), seed=3)
    owners: dict[str, str] = {}
    for name, items in splits.items():
        for item in items:
            assert owners.setdefault(item.patient_key, name) == name
    assert sum(len(v) for v in splits.values()) == n_patients * per_patient


def test_stratified_and_proportional() -> None:
    splits = patient_splits(make_items(200, 3), seed=0)
    total = 600
    assert len(splits["train"]) / total == pytest.approx(0.7, abs=0.03)
    for name in ("val", "test"):
        labels = {i.label for i in splits[name]}
        assert labels == {"NORMAL", "PNEUMONIA"}
        assert len(splits[name]) / total == pytest.approx(0.15, abs=0.03)


def test_deterministic_from_seed() -> None:
    items = make_items(50, 2)

    def ids(splits: dict) -> dict:
        return {name: {i.sample_id for i in part} for name, part in splits.items()}

    assert ids(patient_splits(items, seed=5)) == ids(patient_splits(list(reversed(items)), seed=5))
    assert ids(patient_splits(items, seed=5)) != ids(patient_splits(items, seed=6))


def test_fractions_must_sum_to_one() -> None:
    with pytest.raises(ValueError, match="sum to 1"):
        patient_splits(make_items(10, 1), fractions=(0.5, 0.2, 0.2))


def test_calibration_is_carved_patient_level_from_a_large_validation_split() -> None:
    from pipelines.splits import carve_calibration

    val = make_items(130, 2)  # 260 films, 130 per class
    select, calibration = carve_calibration(val, seed=1)
    assert len(select) + len(calibration) == len(val)
    assert {i.patient_key for i in select}.isdisjoint({i.patient_key for i in calibration})
    for half in (select, calibration):
        labels = [i.label for i in half]
        assert labels.count("NORMAL") >= 60 and labels.count("PNEUMONIA") >= 60
        assert abs(len(half) - 130) <= 2
    assert carve_calibration(val, seed=1) == (select, calibration)
    assert carve_calibration(val, seed=2) != (select, calibration)


@pytest.mark.parametrize(("n_patients", "labels"), [(236, ("NORMAL", "PNEUMONIA")), (400, ("A", "B", "C", "D", "E"))])
def test_a_small_validation_split_serves_both_roles(n_patients: int, labels: tuple[str, ...]) -> None:
    """Under 120 films of some class, halving validation would leave the threshold too few positives."""
    from pipelines.splits import carve_calibration

    val = make_items(n_patients, 1, labels)
    assert carve_calibration(val, seed=0) == (val, [])
