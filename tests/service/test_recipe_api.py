"""The training recipe's fields over HTTP: stored in the job's spec as sent (null included), bad values refused."""

from __future__ import annotations

import pytest

from pipelines.training.spec import BASELINE_RECIPE
from tests.conftest import Stack
from tests.service.test_bad_input import _any_dataset_id

pytestmark = pytest.mark.e2e


def test_recipe_fields_reach_the_job_spec(stack: Stack) -> None:
    with stack.client() as client:
        body = {"dataset_id": _any_dataset_id(client), "backbone": "test_resnet", "strategy": "full", "epochs": 1}
        r = client.post("/v1/jobs", json=body)
        assert r.status_code == 202, r.text
        default = r.json()["spec"]
        assert default["augment"] == "scanner" and default["ema_decay"] == 0.998
        assert default["early_stopping_patience"] == 3 and default["label_smoothing"] == 0.1
        client.post(f"/v1/jobs/{r.json()['id']}/cancel")
        r = client.post("/v1/jobs", json=body | BASELINE_RECIPE)
        assert r.status_code == 202, r.text
        assert {k: r.json()["spec"][k] for k in BASELINE_RECIPE} == BASELINE_RECIPE  # nulls kept, not defaulted
        client.post(f"/v1/jobs/{r.json()['id']}/cancel")


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"augment": "heavy"}, "augment"),
        ({"label_smoothing": 0.9}, "label_smoothing"),
        ({"ema_decay": 1.0}, "ema_decay"),
        ({"early_stopping_patience": 0}, "early_stopping_patience"),
        ({"early_stopping_metric": "f1"}, "early_stopping_metric"),
    ],
)
def test_bad_recipe_fields_are_refused(stack: Stack, change: dict, expected: str) -> None:
    with stack.client() as client:
        body = {"dataset_id": _any_dataset_id(client), "backbone": "test_resnet", "strategy": "full", "epochs": 1}
        r = client.post("/v1/jobs", json=body | change)
        assert r.status_code == 422 and expected in r.text, r.text
