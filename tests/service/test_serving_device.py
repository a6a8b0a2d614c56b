"""The API says at start-up where it runs its models, and it is where the host's hardware says."""

from __future__ import annotations

import time

import torch

from tests.conftest import Stack


def test_start_up_line_names_the_serving_device(stack: Stack) -> None:
    expected = "models run on cuda:0" if torch.cuda.is_available() else "models run on cpu"
    log = stack.logs / "api.log"
    deadline = time.monotonic() + 30
    while expected not in log.read_text(errors="replace"):
        assert time.monotonic() < deadline, log.read_text(errors="replace")[-2000:]
        time.sleep(0.2)
    assert "micro-batching on (up to " in log.read_text(errors="replace")
