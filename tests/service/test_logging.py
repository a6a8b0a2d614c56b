"""Log formats: console lines by default, JSON on request; bound ids land on library records too."""

from __future__ import annotations

import json
import logging

import pytest

from hilum.logs import bind_context, clear_context, configure_logging
from hilum.settings import Settings


@pytest.fixture(autouse=True)
def restore_logging() -> object:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    clear_context()


def test_console_is_the_default(capsys: pytest.CaptureFixture[str]) -> None:
    settings = Settings()
    assert settings.log_format == "console" and settings.log_level == "INFO"
    configure_logging(settings, process="api")
    bind_context(request_id="r-1")
    logging.getLogger("uvicorn.error").info("started %s", "ok")
    logging.getLogger("hilum.test").debug("hidden at INFO")
    err = capsys.readouterr().err
    assert "started ok" in err and "request_id=r-1" in err and "process=api" in err
    assert not err.lstrip().startswith("{") and "hidden" not in err


def test_json_lines_with_bound_ids(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging(Settings(log_format="json", log_level="debug"), process="worker")
    bind_context(job_id="j-42")
    logging.getLogger("celery.app.trace").debug("epoch %d done", 3)
    line = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
    assert line["event"] == "epoch 3 done" and line["job_id"] == "j-42" and line["level"] == "debug"
    assert line["process"] == "worker" and line["logger"] == "celery.app.trace" and line["timestamp"]
