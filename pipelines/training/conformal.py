"""Split conformal prediction sets (LAC: least ambiguous set-valued classifier, Sadinle et al. 2019).

Why a few lines of our own rather than MAPIE or crepes: the method is one quantile. Scores on a held-out
calibration split are ``1 - p(true class)``; ``qhat`` is their ``ceil((n + 1)(1 - alpha)) / n`` empirical
quantile; a film's set is every class with ``p >= 1 - qhat``. Serving needs only ``qhat`` (a float in the
artifact), not a fitted library object wrapping an sklearn-style estimator (MAPIE's ``prefit`` API and its
pickled estimators changed across its 0.x/1.x releases), and the guarantee is checked by our own test.

Guarantee: for exchangeable calibration and test films, P(true class in set) >= 1 - alpha (and < 1 - alpha
+ 1/(n + 1) with continuous scores). An empty set (possible with LAC) is given the top class, which only
raises coverage. The calibration films are the dataset's calibration split when it has one: validation
also picks the best epoch, which flatters its scores, so a ``qhat`` fitted there under-covers new films
(0.865 at a nominal 0.90 in ``bench/trust.py``). Their temperature is fitted on the same films: one
parameter, so the dependence is slight; the report states the empirical coverage on the untouched test split.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

METHOD = "split-conformal (LAC)"
DEFAULT_COVERAGE = 0.9


def fit(probs: np.ndarray, labels: np.ndarray, *, coverage: float = DEFAULT_COVERAGE) -> dict:
    """The artifact's ``conformal`` dict from calibrated probabilities (N, C) and labels of the calibration split.

    With too few films for the requested coverage (``ceil((n + 1) * coverage) > n``) ``qhat`` is 1.0: every
    set holds every class, and a note says so.
    """
    if not 0.0 < coverage < 1.0:
        raise ValueError("coverage must be in (0, 1)")
    probs, labels = np.asarray(probs, dtype=np.float64), np.asarray(labels, dtype=np.int64)
    n = int(len(labels))
    out: dict = {"method": METHOD, "coverage": float(coverage), "qhat": 1.0, "n_cal": n, "note": None}
    k = math.ceil((n + 1) * coverage)
    if n == 0 or k > n:
        out["note"] = f"{n} calibration films cannot support {coverage:.0%} coverage: every set holds every class"
        return out
    scores = np.sort(1.0 - probs[np.arange(n), labels])
    out["qhat"] = float(scores[k - 1])
    return out


def prediction_set(p: np.ndarray | Sequence[float], class_names: Sequence[str], qhat: float) -> list[str]:
    """Classes whose probability is at least ``1 - qhat`` (the top class when none is)."""
    p = np.asarray(p, dtype=np.float64)
    keep = [name for name, v in zip(class_names, p, strict=True) if v >= 1.0 - qhat - 1e-12]
    return keep or [class_names[int(np.argmax(p))]]


def set_mask(probs: np.ndarray, qhat: float) -> np.ndarray:
    """Boolean (N, C): class c is in film i's set (``prediction_set`` for a whole batch)."""
    probs = np.asarray(probs, dtype=np.float64)
    mask = probs >= 1.0 - qhat - 1e-12
    empty = ~mask.any(axis=1)
    mask[empty, probs[empty].argmax(axis=1)] = True
    return mask


def empirical_coverage(probs: np.ndarray, labels: np.ndarray, qhat: float, class_names: Sequence[str]) -> float | None:
    """Share of films whose true class is in their set (None for an empty split)."""
    if len(labels) == 0:
        return None
    labels = np.asarray(labels, dtype=np.int64)
    return float(set_mask(probs, qhat)[np.arange(len(labels)), labels].mean())


def set_sizes(probs: np.ndarray, qhat: float, class_names: Sequence[str]) -> dict[str, int]:
    """How many films got a set of each size ("1", "2", ...): the share of "uncertain" answers."""
    if len(probs) == 0:
        return {}
    sizes, counts = np.unique(set_mask(probs, qhat).sum(axis=1), return_counts=True)
    return {str(int(k)): int(c) for k, c in zip(sizes, counts, strict=True)}
